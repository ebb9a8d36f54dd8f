"""The HTML pieces every phifilter report is made of: one look, nothing fetched.

`phifilter report` (:mod:`phifilter.report`) and the ablation report
(:mod:`phifilter.pretrain.ablation_report`) build their pages from these: ``escape`` for every
piece of text, figures and images as base64 ``data:`` URIs, tables, and ``html_page``, the page
shell with the shared inline CSS and a Content-Security-Policy that forbids every fetch, so a
page opens offline, can be mailed around, and shows no markup a document smuggled in.
matplotlib is imported only by ``new_figure``.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Callable, Iterable, Sequence

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7em;margin:0.3em 0}h2{margin-top:1.8em;border-bottom:2px solid #d8dce3;padding-bottom:4px}
h3{margin-bottom:0.3em}
.lead{color:#4a5263}.note{color:#5b6475;font-size:0.9em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:10px 16px;min-width:150px}
.card b{display:block;font-size:1.5em}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:0.92em}
th,td{border:1px solid #d8dce3;padding:4px 10px;text-align:right}
th{background:#eef0f4}td:first-child,th:first-child{text-align:left}
img.fig{max-width:100%;background:#fff;border:1px solid #d8dce3;border-radius:6px}
details.doc{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:6px 0;padding:4px 10px}
details.doc summary{cursor:pointer;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.88em}
pre{white-space:pre-wrap;word-break:break-word;font-size:0.82em;max-height:28em;overflow:auto;
background:#fbfbfc;padding:8px;border-radius:4px;margin:6px 0}
.score{font-weight:bold}
"""


def escape(value) -> str:
    """HTML-escape anything (quotes too), so document text can never become markup."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """Bytes as a ``data:`` URI, for an ``<img src=...>`` that fetches nothing."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_to_data_uri(fig, fmt: str = "png", dpi: int = 110) -> str:
    """Render a matplotlib Figure to a ``data:`` URI (PNG or SVG) for an ``<img src=...>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    return data_uri(buf.getvalue(), {"png": "image/png", "svg": "image/svg+xml"}[fmt])


def img(src: str, alt: str) -> str:
    """An ``<img>`` tag for a ``data:`` URI (see :func:`data_uri`)."""
    return f'<img class="fig" alt="{escape(alt)}" src="{src}">'


def figure_img(fig, alt: str, fmt: str = "png") -> str:
    """An ``<img>`` tag holding the figure inline."""
    return img(figure_to_data_uri(fig, fmt), alt)


def new_figure(width: float = 7.5, height: float = 3.4):
    """A matplotlib Figure without pyplot (no global state, no GUI backend needed)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def html_table(header: Sequence, rows: Iterable[Sequence], classes: str = "",
               cell: Callable[[object], str] = escape) -> str:
    """A table; ``cell`` turns every header and body cell into HTML (default: escape it)."""
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cls = f' class="{escape(classes)}"' if classes else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str, css: str = CSS) -> str:
    """A whole self-contained page: inline CSS, no scripts, nothing fetched (``body`` is trusted HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # Forbid every fetch, even if a bug let markup through: images only from data: URIs.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{css}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )
