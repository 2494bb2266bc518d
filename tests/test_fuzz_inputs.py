"""Property-based tests of what users feed the toolkit: audio bytes, WAV headers, manifest rows
and ``--set`` values. Every case ends in success or one deliberate one-line error.

The default suite runs ``FUZZ_EXAMPLES`` cases per property (see ``conftest.py``); a longer run:
``PYRO_AVSS_FUZZ=long python -m pytest tests/test_fuzz_inputs.py``.
"""

from __future__ import annotations

import csv
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pyro_avss.audio import load_audio
from pyro_avss.config import load_config
from pyro_avss.errors import PyroAvssError
from pyro_avss.inference.run_separate import jobs_from_inputs, safe_name
from pyro_avss.inference.separation import SeparationSettings


def one_line_error(exc: Exception) -> bool:
    return isinstance(exc, PyroAvssError) and "\n" not in str(exc) and str(exc).strip() != ""


def wav_header(rate: int, channels: int, bits: int, fmt: int, data_bytes: int, declared: int) -> bytes:
    """A RIFF/WAVE header whose fields may lie about the data that follows."""
    block = channels * max(bits // 8, 1)
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + declared) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", declared & 0xFFFFFFFF)
            + bytes(data_bytes))


def check_audio_bytes(payload: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(payload)
        try:
            audio = load_audio(path, 16000, resample=True)
        except Exception as exc:                          # noqa: BLE001 - the property
            assert one_line_error(exc), repr(exc)
        else:
            assert audio.ndim == 1 and audio.dtype == np.float32 and len(audio) > 0
            assert np.isfinite(audio).all()


@pytest.mark.filterwarnings("ignore:.*truncated file")
@given(st.binary(max_size=4096), st.sampled_from([".wav", ".flac", ".ogg"]))
def test_random_bytes_as_audio(payload, suffix):
    check_audio_bytes(payload, suffix)


@pytest.mark.filterwarnings("ignore:.*truncated file")
@given(rate=st.sampled_from([0, 1, 8000, 16000, 44100, 2**31 - 1]), channels=st.integers(0, 9),
       bits=st.sampled_from([0, 8, 16, 24, 32, 64, 7]), fmt=st.sampled_from([0, 1, 3, 2, 0xFFFE]),
       data_bytes=st.integers(0, 3000), declared=st.integers(0, 2**32 - 1))
def test_random_wav_headers(rate, channels, bits, fmt, data_bytes, declared):
    check_audio_bytes(wav_header(rate, channels, bits, fmt, data_bytes, declared), ".wav")


ids = st.one_of(st.text(max_size=30), st.sampled_from(["..", "../x", "/etc/x", "a/../../b", ".",
                                                       "C:\\x", "ok", "ok", "dup"]))


@given(st.lists(st.tuples(ids, st.text(max_size=30)), max_size=8))
def test_random_manifest_rows_never_name_a_folder_outside_out(rows):
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.csv"
        with open(manifest, "w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            w = csv.writer(f)
            w.writerow(["id", "mixture"])
            w.writerows(rows)
        try:
            jobs, problems = jobs_from_inputs([str(manifest)], [], 1)
        except Exception as exc:                          # noqa: BLE001
            assert one_line_error(exc), repr(exc)
            return
        out = Path(tmp) / "out"
        names = [j.name for j in jobs]
        assert len(set(names)) == len(names)
        for name in names:
            assert safe_name(name, "x") == name
            assert (out / name).resolve().parent == out.resolve()
        assert all("\n" not in f"{where}: {why}" for where, why in problems)


keys = st.sampled_from([f"separate.{k}" for k in SeparationSettings.__dataclass_fields__]
                       + ["separate.bogus", "train.lr", "separate", "nope.x"])
values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=12), st.booleans(), st.sampled_from(["[1, 2]", "{a: 1}", "null",
                                                                         ".nan", "-.inf", "1e309"]))


@given(st.lists(st.tuples(keys, values), max_size=4))
def test_random_set_values(pairs):
    try:
        cfg = load_config(None, [f"{k}={v}" for k, v in pairs])
        SeparationSettings.from_config(cfg["separate"])
    except Exception as exc:                              # noqa: BLE001
        assert one_line_error(exc), repr(exc)
