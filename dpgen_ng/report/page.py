"""report.html: the figures (PNG files beside it) and the status table; opens offline."""

from __future__ import annotations

import html
from pathlib import Path

from dpgen_ng.io import atomic_write_text
from dpgen_ng.report.data import collect
from dpgen_ng.report.figures import ALL, Picture
from dpgen_ng.status import format_status

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}
figure{margin:1.5em 0}figcaption{color:#555;font-size:.9em}"""


def _page(workdir: Path, status_text: str, stop: str, pictures: list[Picture]) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>dpgen report: {esc(workdir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>dpgen run report</h1><p>Work dir: <code>{esc(str(workdir))}</code></p>",
        f"<p><b>Status:</b> {esc(stop)}</p>",
    ]
    for pic in pictures:
        parts.append(f"<figure><h2>{esc(pic.title)}</h2><img src='{esc(pic.name)}' alt='{esc(pic.title)}'>"
                     f"<figcaption>{esc(pic.caption)}</figcaption></figure>")
    parts += [f"<h2>dpgen status</h2><pre>{esc(status_text)}</pre>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(workdir: Path, out: Path | None = None) -> Path:
    """Draw every figure the run has data for into ``out`` (default ``WORKDIR/report``) and
    write ``report.html`` there; returns its path."""
    workdir = Path(workdir).resolve()
    out = Path(out).resolve() if out is not None else workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    run = collect(workdir)
    pictures = [pic for draw in ALL for pic in draw(run, out)]
    page = out / "report.html"
    atomic_write_text(page, _page(workdir, format_status(run.status), run.status["stop_reason"], pictures))
    return page
