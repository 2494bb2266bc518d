"""Open a local page in headless Chromium and inspect it over the Chrome DevTools Protocol.

Test helper only (not part of the package), standard library only: Chromium is started with
``--remote-debugging-port=0`` (it picks a free port and writes it to ``DevToolsActivePort`` in
its profile folder), and this module speaks the protocol over a minimal WebSocket client
(RFC 6455: HTTP upgrade, masked client frames, unmasked server frames, no extensions). No
network is used and nothing is downloaded: the browser is the one on ``PATH``.

    with Chromium() as browser:
        page = browser.open_page()
        page.navigate("file:///tmp/report.html")
        value = page.evaluate("document.title")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on ``PATH``, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """A blocking WebSocket client for one ``ws://host:port/path`` URL (text frames only)."""

    def __init__(self, url: str, timeout: float = 30.0):
        assert url.startswith("ws://"), url
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the connection during the handshake")
            head += chunk
        head, _, self._buffer = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"WebSocket upgrade refused: {status.decode(errors='replace')}")

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytes([0x81])                                   # FIN, text frame
        if n < 126:
            header += bytes([0x80 | n])                          # masked (client frames must be)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def recv(self) -> str:
        """The next text message (fragments joined; pings answered; close raises)."""
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise ConnectionError("the browser closed the WebSocket")
            if opcode == 0x9:                                    # ping: answer with a pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([0x88, 0x80]) + b"\0\0\0\0")
        except OSError:
            pass
        self.sock.close()


class Page:
    """One browser tab: send commands, collect events (console messages, exceptions)."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        self.ws = WebSocket(ws_url, timeout)
        self.timeout = timeout
        self.events: list[dict] = []
        self._id = 0

    def send(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """Run a command and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        me = self._id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params or {}}))
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            self.ws.sock.settimeout(max(0.1, end - time.monotonic()))
            message = json.loads(self.ws.recv())
            if message.get("id") == me:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float | None = None) -> dict:
        """The first (kept or coming) event named ``event``."""
        for e in self.events:
            if e["method"] == event:
                return e
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            self.ws.sock.settimeout(max(0.1, end - time.monotonic()))
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return message

    def navigate(self, url: str) -> None:
        """Enable the Page/Runtime/Log domains (console and exceptions are recorded from now on),
        load ``url`` and wait for its load event."""
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float | None = None):
        """The value of a JavaScript expression (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str | Path, width: int, height: int) -> Path:
        """A PNG of the top ``width`` × ``height`` CSS pixels of the page."""
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def errors(self) -> list[str]:
        """Console errors (``console.error``/``assert``), uncaught exceptions and error log
        entries (e.g. a failed resource load) seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                 for a in p.get("args", [])))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        return out

    def close(self) -> None:
        self.ws.close()


class Chromium:
    """A headless Chromium with a throw-away profile, killed on exit."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise FileNotFoundError("chromium is not on PATH")
        self.timeout = timeout

    def __enter__(self) -> "Chromium":
        self.profile = tempfile.mkdtemp(prefix="pyro_avss_chromium_")
        args = [self.executable, "--headless=new", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                "about:blank"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = Path(self.profile) / "DevToolsActivePort"
        end = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")[-2000:]
                self.__exit__()
                raise RuntimeError(f"chromium exited ({self.process.returncode}): {err}")
            if time.monotonic() > end:
                self.__exit__()
                raise TimeoutError("chromium did not write DevToolsActivePort")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        return self

    def open_page(self) -> Page:
        """A new tab (``/json/new``), connected."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never a proxy
        with opener.open(request, timeout=self.timeout) as response:
            target = json.load(response)
        return Page(target["webSocketDebuggerUrl"], self.timeout)

    def __exit__(self, *exc) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stderr:
            process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


#: JavaScript: load every <audio> of the page (preload auto) and report, per element, its src,
#: duration and error (code), or "timeout" when neither loadedmetadata nor error came in time
AUDIO_CHECK = """
(async () => {
  const audios = Array.from(document.querySelectorAll('audio'));
  const one = (a) => new Promise((resolve) => {
    const done = (error) => resolve({src: a.getAttribute('src'), duration: a.duration,
                                     error: error});
    const timer = setTimeout(() => done('timeout'), %(ms)d);
    a.addEventListener('loadedmetadata', () => { clearTimeout(timer); done(null); }, {once: true});
    a.addEventListener('error', () => { clearTimeout(timer);
      done('error ' + (a.error ? a.error.code + ' ' + a.error.message : '?')); }, {once: true});
    a.preload = 'auto';
    a.load();
  });
  return Promise.all(audios.map(one));
})()
"""


def audio_check(page: Page, timeout_s: float = 20.0) -> list[dict]:
    """``[{"src", "duration", "error"}]`` for every audio element of the open page."""
    return page.evaluate(AUDIO_CHECK % {"ms": int(timeout_s * 1000)}, timeout=timeout_s + 10)


__all__ = ["Chromium", "Page", "WebSocket", "find_chromium", "audio_check", "AUDIO_CHECK"]
