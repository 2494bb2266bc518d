"""Self-contained HTML listening reports (``report.html``), shared by ``cli.py evaluate`` and
``cli.py separate``.

A report is one HTML file with its style and a few lines of vanilla JavaScript inline: no
server, no external asset, no CDN, so it works offline from ``file://``. Audio and images are
*linked*, by paths relative to the report (the WAV and PNG files lie next to it), not embedded:
base64 would make the page a third larger than the files and the browser would have to decode
every recording before showing the page; linked files with ``preload="none"`` load only when
played. Move the report together with its folder.

Each item is a ``<section class="item">`` whose ``data-*`` attributes (e.g. ``data-snr``) the
filter menus at the top select on; elements of class ``grp`` with the same attributes (summary
tables) follow the filters whose attribute they carry.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:1500px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}h3{font-size:1.05em;margin:.2em 0}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.2em .55em;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f0f0f0}
caption{caption-side:top;text-align:left;font-size:.9em;color:#444;padding:.2em 0;max-width:70em}
.tables{display:flex;flex-wrap:wrap;gap:0 1.5em;align-items:flex-start}
.item{border-top:2px solid #999;padding:.6em 0 1em}
.players{display:flex;flex-wrap:wrap;gap:.4em 1.2em}
.player{margin:0}.player figcaption{font-size:.8em;color:#444}
.player audio{width:15em;height:2.2em}
img{max-width:100%;display:block;margin:.4em 0}
#filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ccc;z-index:1}
#filters label{margin-right:1.2em}.note{color:#555;font-size:.88em}
"""

SCRIPT = """
function applyFilters(){
  var sel=document.querySelectorAll('#filters select'),shown=0,all=0;
  document.querySelectorAll('.item,.grp').forEach(function(el){
    var ok=true;
    sel.forEach(function(s){var v=el.getAttribute('data-'+s.name);
      if(s.value!=='' && v!==null && v!==s.value) ok=false;});
    el.style.display=ok?'':'none';
    if(el.classList.contains('item')){all++; if(ok) shown++;}
  });
  var c=document.getElementById('count'); if(c) c.textContent=shown+' of '+all+' shown';
}
document.querySelectorAll('#filters select').forEach(function(s){s.onchange=applyFilters;});
applyFilters();
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def href(path: str | Path, base: str | Path) -> str:
    """``path`` relative to the folder ``base``, URL-quoted (for ``src``/``href``)."""
    rel = os.path.relpath(Path(path).resolve(), Path(base).resolve())
    return quote(Path(rel).as_posix())


def _data(attrs: dict | None) -> str:
    return "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (attrs or {}).items())


def table(head: list[str], rows: list[list], caption: str = "", attrs: dict | None = None,
          row_attrs: list[dict] | None = None) -> str:
    """An HTML table; cells are escaped; ``attrs`` (of the table) and ``row_attrs`` (one dict
    per row) become ``data-*`` attributes that the filters select on (class grp)."""
    out = [f'<table class="grp"{_data(attrs)}>' if attrs else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        extra = row_attrs[i] if row_attrs else None
        out.append((f'<tr class="grp"{_data(extra)}>' if extra else "<tr>")
                   + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


@dataclass
class Item:
    """One recording of a report.

    :param players: ``[(label, audio file)]``; ``images``: ``[(alt text, image file)]``;
    :param tables: HTML already made with :func:`table`; ``attrs``: filter values.
    """

    title: str
    players: list = field(default_factory=list)
    images: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    note: str = ""


def render_item(item: Item, base: Path) -> str:
    out = [f'<section class="item"{_data(item.attrs)}>', f"<h3>{esc(item.title)}</h3>"]
    if item.note:
        out.append(f'<p class="note">{esc(item.note)}</p>')
    if item.players:
        out.append('<div class="players">')
        out += [f'<figure class="player"><figcaption>{esc(label)}</figcaption>'
                f'<audio controls preload="none" src="{href(path, base)}"></audio></figure>'
                for label, path in item.players]
        out.append("</div>")
    out += item.tables
    out += [f'<img loading="lazy" alt="{esc(alt)}" src="{href(path, base)}">' for alt, path in item.images]
    out.append("</section>")
    return "\n".join(out)


def write_report(path: str | Path, title: str, items: list[Item], *, intro: str = "",
                 summary: str = "", filters: dict | None = None) -> Path:
    """Write ``report.html`` at ``path``.

    :param intro: HTML (already escaped) under the title; ``summary``: HTML tables.
    :param filters: ``{attribute: label}``; a menu per attribute lists the values items carry.
    """
    path = Path(path)
    base = path.parent
    menus = []
    for key, label in (filters or {}).items():
        values = list(dict.fromkeys(str(i.attrs[key]) for i in items if key in i.attrs))
        if len(values) < 1:
            continue
        options = '<option value="">all</option>' + "".join(
            f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
        menus.append(f'<label>{esc(label)} <select name="{esc(key)}">{options}</select></label>')
    body = [f"<h1>{esc(title)}</h1>", intro]
    if menus:
        body.append('<div id="filters">' + "".join(menus) + ' <span id="count" class="note"></span></div>')
    body.append(summary)
    if items:
        body.append("<h2>Recordings</h2>")
        body += [render_item(i, base) for i in items]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["Item", "write_report", "table", "href", "esc"]
