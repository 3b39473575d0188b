"""One self-contained HTML page of an experiment's results, readable offline.

``collect`` reads evaluate's summaries (metrics/<ds>.json) and asks DVC for what dvc.yaml declares (``dvc metrics show --json`` and
``dvc plots show --json``, the public JSON of the two commands), so the page shows exactly the
named plots, titles and axis labels of ``dvc plots show``, plus every declared metric.
``render_page`` turns that into HTML: the headline table of every dataset and head, each
Vega-Lite plot drawn to SVG by vl-convert (no JavaScript, no chart library), and every image plot.
Pictures are inlined as ``data:`` URIs, so the page refers to nothing outside itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from petprobe.errors import PetprobeError
from petprobe.heads.registry import HEADS

__all__ = ["Readouts", "collect", "render_page", "HEADLINE_COLUMNS"]

# The per-head numbers of metrics/<ds>.json, in table order (with their 95% interval when present).
HEADLINE_COLUMNS = ("top1", "balanced_accuracy", "top3", "top5", "log_loss", "ece")
# The page may load nothing but its own inline style and data: pictures; a browser refuses (and
# logs) anything else, so an external URL slipping in is an error, not a silent network fetch.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PNG_LIMIT = 1_000_000  # bytes: larger pictures go into the page as JPEG


@dataclass
class Readouts:
    """What the page shows: declared metrics per file, every dataset's summary (metrics/<ds>.json),
    plots by name (Vega-Lite specs or PNG bytes), DVC's errors."""

    metrics: dict[str, dict] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)
    charts: dict[str, dict] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _dvc_json(root: Path, *args: str) -> dict:
    # DVC's own CLI, from the running interpreter's environment; DVC_* variables of an enclosing
    # `dvc repro` are dropped so the child reads the workspace as a user's command would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc) if dvc.exists() else "dvc", *args, "--json"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PetprobeError(f"`dvc {' '.join(args)} --json` failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout or "{}")


def collect(root: Path | str = ".") -> Readouts:
    """Every declared metric and plot of the workspace at ``root``."""
    root = Path(root)
    out = Readouts()
    # evaluate's full summary of each dataset (every head, comparisons included): the headline table.
    for path in sorted((root / "metrics").glob("*.json")):
        out.summaries[path.relative_to(root).as_posix()] = json.loads(path.read_text())
    shown = _dvc_json(root, "metrics", "show")
    for rev in shown.values():
        for path, entry in (rev.get("data") or {}).items():
            if isinstance(entry.get("data"), dict):
                # The file itself: DVC's JSON drops lists, such as the [lo, hi] 95% intervals.
                out.metrics[path] = json.loads((root / path).read_text())
            elif "error" in entry:
                out.errors.append(f"{path}: {entry['error']}")
    with tempfile.TemporaryDirectory(prefix="petprobe-report-") as scratch:
        plots = _dvc_json(root, "plots", "show", "-o", scratch)
        for error in plots.get("errors") or []:
            out.errors.append(f"plot {error.get('name')}: {error.get('msg') or error.get('type')}")
        for name, entries in (plots.get("data") or {}).items():
            for entry in entries:
                if entry.get("type") == "vega" and entry.get("content"):
                    out.charts[name] = entry["content"]
                elif entry.get("type") == "image" and entry.get("url"):
                    out.images[name] = Path(entry["url"]).read_bytes()
    return out


def _svg(spec: dict) -> str:
    import vl_convert

    spec = {k: v for k, v in spec.items() if k != "$schema"}  # a URL; the schema is not needed to draw
    return vl_convert.vegalite_to_svg(spec)


def _page_picture(png: bytes) -> tuple[str, bytes, str]:
    """The PNG itself, or for a large one (attack sheets: mostly noise) a JPEG copy that keeps the page small."""
    if len(png) <= PNG_LIMIT:
        return "image/png", png, ""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=85)
    return "image/jpeg", buffer.getvalue(), f" (JPEG copy, quality 85; the PNG is {len(png) / 1e6:.1f} MB)"


def _data_uri(kind: str, payload: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(payload).decode('ascii')}"


def _number(value) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return html.escape(str(value))


def _dataset_of(path: str) -> str | None:
    parts = Path(path).parts
    if len(parts) == 2 and parts[0] == "metrics" and parts[1].endswith(".json"):
        return parts[1][:-5]
    return None


def _headline_table(metrics: dict[str, dict]) -> str:
    rows = []
    for path, data in sorted(metrics.items()):
        ds = _dataset_of(path)
        if ds is None:
            continue
        for head in HEADS:
            numbers = data.get(head)
            if not isinstance(numbers, dict) or "top1" not in numbers:
                continue
            cells = []
            for key in HEADLINE_COLUMNS:
                text = _number(numbers[key]) if key in numbers else "-"
                if f"{key}_ci95" in numbers:
                    text += f" <small>{_number(numbers[f'{key}_ci95'])}</small>"
                cells.append(f"<td>{text}</td>")
            rows.append(f"<tr><th>{html.escape(ds)}</th><th>{html.escape(head)}</th>"
                        f"<td>{_number(data.get('n_test'))}</td>{''.join(cells)}</tr>")
    header = "".join(f"<th>{c}</th>" for c in ("dataset", "head", "n_test", *HEADLINE_COLUMNS))
    return (f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "<p class=note>Test split of each dataset; top1 etc. as fractions, log_loss in nats, "
            "ece: expected calibration error; [lo, hi]: 95% interval where the pipeline computes one.</p>")


def _flat(data, prefix: str = ""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flat(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


def _other_metrics(metrics: dict[str, dict]) -> str:
    parts = []
    for path, data in sorted(metrics.items()):
        if _dataset_of(path) is not None or path.endswith("/headline.json"):  # in the headline table
            continue
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_number(v)}</td></tr>" for k, v in _flat(data))
        parts.append(f"<h3>{html.escape(path)}</h3><table>{rows}</table>")
    return "".join(parts)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}small{color:#666}.note{color:#555;font-size:12px}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:12px;color:#444}
img{max-width:100%;border:1px solid #eee}.errors{color:#a00}
"""


def render_page(readouts: Readouts, *, title: str) -> str:
    """The HTML page (one string, nothing external)."""
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Headline numbers</h2>", _headline_table(readouts.summaries)]
    if other := _other_metrics(readouts.metrics):
        sections += ["<h2>Other metrics</h2>", other]
    if readouts.charts:
        sections.append("<h2>Plots</h2>")
        for name, spec in readouts.charts.items():
            svg = _svg(spec).encode("utf-8")
            sections.append(f"<figure><img alt='{html.escape(name)}' src='{_data_uri('image/svg+xml', svg)}'>"
                            f"<figcaption>{html.escape(name)}</figcaption></figure>")
    if readouts.images:
        sections.append("<h2>Pictures</h2>")
        for name, png in readouts.images.items():
            kind, payload, note = _page_picture(png)
            sections.append(f"<figure><img alt='{html.escape(name)}' src='{_data_uri(kind, payload)}'>"
                            f"<figcaption>{html.escape(name)}{note}</figcaption></figure>")
    if readouts.errors:
        items = "".join(f"<li>{html.escape(e)}</li>" for e in readouts.errors)
        sections.append(f"<h2>Not shown</h2><ul class=errors>{items}</ul>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=Content-Security-Policy content=\"{CSP}\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
