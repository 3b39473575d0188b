"""One self-contained HTML page of an experiment's results, readable offline.

``collect`` reads evaluate's summaries (metrics/<ds>.json), where the numbers come from
(provenance: commit, backbone and weights, data source and counts, versions) and asks DVC for
what dvc.yaml declares (``dvc metrics show --json`` and ``dvc plots show --json``, the public JSON
of the two commands), so the page shows exactly the named plots, titles and axis labels of
``dvc plots show``, plus every declared metric.
``render_page`` turns that into HTML: a provenance header, a contents list, one section per
dataset (its headline table with intervals, then accuracy, calibration, attacks, ideal images,
explanations), a glossary of every headline key. Each Vega-Lite plot is drawn to SVG by vl-convert
(no JavaScript, no chart library) with a caption saying what to read from it; pictures go in as
downscaled JPEG thumbnails that link to the full PNG on disk, so the page stays under
``PAGE_BUDGET`` and refers to nothing outside itself but those local files.
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

from petprobe.artefacts import Artefacts
from petprobe.catalogue import HEADS, TRAINED
from petprobe.errors import PetprobeError
from petprobe.reporting.headline import HEAD_KEYS, head_key
from petprobe.reporting.plots import caption, chart_ids, image_caption
from petprobe.reporting.provenance import dataset_provenance, git_state, run_date, versions
from petprobe.reporting.study_files import read_written_study, study_note

__all__ = ["Readouts", "collect", "render_page", "HEADLINE_COLUMNS", "GLOSSARY", "PAGE_BUDGET", "head_names"]

# The per-head numbers of metrics/<ds>.json, in table order (with their 95% interval when present).
HEADLINE_COLUMNS = ("top1", "balanced_accuracy", "top3", "top5", "log_loss", "ece")
# The page may load nothing but its own inline style and data: pictures; a browser refuses (and
# logs) anything else, so an external URL slipping in is an error, not a silent network fetch.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PAGE_BUDGET = 3_000_000  # bytes of the sample's page (docs/results.md); tests/test_report_page.py holds it
THUMB_WIDTH = 600  # px: pictures wider than this (or large) go in as a JPEG thumbnail linking to the full PNG
THUMB_QUALITY = 65
THUMB_BYTES = 60_000  # a thumbnail's share of PAGE_BUDGET: 26 pictures (the sample's) and 20 charts fit with room

# One sentence per headline key: what it measures and on which images (the page's glossary).
GLOSSARY = {
    "n_test": "Test images of the dataset (the split every headline number is measured on).",
    "n_rejected": "Files prepare could not use (not an image, empty, truncated), listed with the reason in rejected.csv.",
    "top1": "Fraction of test images whose highest-probability class is the true one; [lo, hi] is the 95% Wilson interval.",
    "balanced_accuracy": "Mean over classes of the per-class recall, so a large class cannot hide a weak small one; "
                         "95% Wilson interval at Kish's effective sample size.",
    "top3": "Fraction of test images whose true class is among the three most probable (shown with more than 5 classes).",
    "top5": "Fraction of test images whose true class is among the five most probable.",
    "log_loss": "Mean negative log-probability of the true class, in nats (lower is better; it punishes confident mistakes).",
    "ece": "Expected calibration error: mean gap between confidence and accuracy over 15 equal-width confidence bins "
           "(0 = perfectly calibrated).",
    "C": "Inverse L2 regularisation strength of the logistic probe, chosen by stratified k-fold cross-validated log-loss "
         "(smallest C within one standard error of the best).",
    "test_twins": "Test images with a near-duplicate (pHash or embedding cosine) in train or val: they inflate test accuracy.",
    "pgd4_success": "Fraction of attacked, correctly classified test images that targeted PGD at L-inf 4/255 pushes to "
                    "the target class (white-box, model input space).",
    "pgd4_transfer": "Fraction of those images (clean-correct for the second backbone) that the 4/255 adversarial images "
                     "also fool on a second backbone's probe.",
    "ideal_p_heldout": "Mean p(target) of the ideal images under transforms they were not optimised for "
                       "(crops, mirroring, colour jitter); chance is 1 / classes.",
    "cam_pet_gain": "Share of the Grad-CAM map on the pet (trimap) minus a uniform map's share: above 0 the map "
                    "points at the animal.",
    "cam_del_gain": "Random order's deletion-curve area minus Grad-CAM's: above 0, deleting in map order hurts the "
                    "prediction faster than random, as a faithful map should.",
}

GLOSSARY["top1_seed_sd"] = ("Standard deviation (ddof 1) of test top-1 over the head's training seeds "
                             "(head.seed plus head.spread_seeds): how much of a difference is seed noise.")
# `dvc metrics show`'s one row per dataset names a head's numbers <head>_top1 and <head>_top1_sd.
GLOSSARY.update({head_key(name, key): f"The {HEADS[name].label}'s {key}, as `dvc metrics show` names it (see {key})."
                 for name in TRAINED for key in HEAD_KEYS if key == "top1" or HEADS[name].seeded})

_SECTIONS = (
    ("accuracy", "Accuracy", ("logreg-C-search", "head-loss", "head-accuracy", "fewshot", "confusion", "per-class-f1"),
     ("samples.png", "misclassified.png", "curves.png")),
    ("calibration", "Calibration", (), ("reliability.png",)),
    ("attacks", "Attacks", ("attack-success-vs-eps",), ("attack_",)),
    ("ideal", "Ideal images", (), ("ideal.png",)),
    ("explanations", "Explanations", ("explain-deletion", "explain-insertion"),
     ("attribution_", "deletion_insertion", "feature_maps", "localisation", "sanity")),
)


def head_names() -> tuple[str, ...]:
    """Every head a summary may hold, in table order (trained heads first, then the comparisons)."""
    return tuple(HEADS)


@dataclass
class Readouts:
    """What the page shows: declared metrics per file, every dataset's summary (metrics/<ds>.json),
    plots by name (Vega-Lite specs or PNG bytes), DVC's errors, and where the numbers come from."""

    metrics: dict[str, dict] = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)
    charts: dict[str, dict] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    study: object = None  # `petprobe study`'s table (a DataFrame) and figures, when one was run
    study_figures: dict[str, bytes] = field(default_factory=dict)


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


def collect(root: Path | str = ".", params: dict | None = None, datasets: list[str] | None = None) -> Readouts:
    """Every declared metric and plot of the workspace at ``root``, and their provenance.

    ``params``: the key params (seeds among them) the page lists in its header, as the stage read them.
    ``datasets``: params.yaml's datasets, whose summaries the page shows (None: every metrics/<ds>.json;
    a summary left from a dataset since removed from params is not a result of this run).
    """
    root = Path(root)
    out = Readouts()
    # evaluate's full summary of each dataset (every head, comparisons included): the headline table.
    for path in sorted((root / "metrics").glob("*.json")):
        if datasets is None or path.stem in datasets:
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
    try:
        if written := read_written_study(Artefacts.study_dir(root)):
            out.study, out.study_figures = written
    except (PetprobeError, ValueError, OSError) as error:
        out.errors.append(f"backbone study: {error}")
    datasets = [_dataset_of(p) for p in out.summaries]
    out.provenance = {"git": git_state(root), "date": run_date(), "versions": versions(), "params": params or {},
                      "datasets": {ds: dataset_provenance(ds, root) for ds in datasets if ds}}
    return out


def _svg(spec: dict) -> str:
    import vl_convert

    spec = {k: v for k, v in spec.items() if k != "$schema"}  # a URL; the schema is not needed to draw
    return vl_convert.vegalite_to_svg(spec)


def _page_picture(png: bytes) -> tuple[str, bytes, str]:
    """The picture as the page shows it: small ones as they are, wide ones as a JPEG thumbnail."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    if image.width <= THUMB_WIDTH and len(png) <= THUMB_BYTES:
        return "image/png", png, ""
    rgb = image.convert("RGB")
    width = min(THUMB_WIDTH, image.width)
    while True:  # narrower until the thumbnail fits its share of the page budget (noise sheets compress badly)
        thumb = rgb.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=THUMB_QUALITY, optimize=True)
        if len(buffer.getvalue()) <= THUMB_BYTES or width <= 240:
            break
        width = width * 4 // 5
    note = f"{width} px thumbnail of a {image.width}×{image.height} px PNG ({len(png) / 1e6:.1f} MB)"
    return "image/jpeg", buffer.getvalue(), note


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


def _key(name: str) -> str:
    """A headline key, linked to its glossary sentence when it has one."""
    text = html.escape(name)
    return f"<a href='#g-{text}'>{text}</a>" if name in GLOSSARY else text


def _calibration_note(calibration) -> str:
    if not isinstance(calibration, dict):
        return ""
    return (f" (temperature-scaled, T = {_number(calibration.get('temperature'))}; before: ece "
            f"{_number(calibration.get('ece_uncalibrated'))}, log_loss {_number(calibration.get('log_loss_uncalibrated'))})")


def _seed_cell(numbers: dict) -> str:
    seeds = numbers.get("seeds")
    if not isinstance(seeds, dict) or not isinstance(seeds.get("top1"), dict) or seeds.get("n_seeds", 0) < 2:
        return "-"
    top1 = seeds["top1"]
    return f"{_number(top1.get('mean'))} ± {_number(top1.get('sd'))} <small>({_number(seeds['n_seeds'])} seeds)</small>"


def _headline_table(ds: str, data: dict) -> str:
    rows = []
    for head in head_names():
        numbers = data.get(head)
        if not isinstance(numbers, dict) or "top1" not in numbers:
            continue
        cells = []
        for key in HEADLINE_COLUMNS:
            text = _number(numbers[key]) if key in numbers else "-"
            if f"{key}_ci95" in numbers:
                text += f" <small>{_number(numbers[f'{key}_ci95'])}</small>"
            cells.append(f"<td>{text}</td>")
        c = f"{numbers['C']:.3g}" if isinstance(numbers.get("C"), (int, float)) else "-"
        rows.append(f"<tr><th>{html.escape(head)}</th><td>{_number(data.get('n_test'))}</td>{''.join(cells)}"
                    f"<td>{c}</td><td>{_seed_cell(numbers)}</td></tr>")
    header = "".join(f"<th>{_key(c)}</th>" for c in ("model", "n_test", *HEADLINE_COLUMNS, "C", "top1 over seeds"))
    return (f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p class=note>Test split of {html.escape(ds)} ({_number(data.get('n_test'))} images; "
            f"{_number(data.get('n_rejected'))} files rejected by prepare). Accuracies are fractions, log_loss in "
            "nats; [lo, hi]: 95% interval where the pipeline computes one; C: the logistic probe's chosen C; top1 over "
            "seeds: mean ± sd of a head trained with several seeds (the row is its saved model).</p>")


def _flat(data, prefix: str = ""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flat(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


def _dataset_metrics(ds: str, metrics: dict[str, dict]) -> str:
    """The dataset's other declared metrics (attacks, ideal images, explanations, near-twins), one row each."""
    in_table = {"n_test", *(head_key(head, key) for head in TRAINED for key in HEAD_KEYS)}  # heads: in the table
    rows = []
    for path, data in sorted(metrics.items()):
        if not path.startswith(f"metrics/{ds}/"):
            continue
        for k, v in _flat(data):
            if k in in_table:
                continue
            rows.append(f"<tr><th>{_key(k)}</th><td>{_number(v)}</td>"
                        f"<td class=l>{html.escape(GLOSSARY.get(k, ''))}</td></tr>")
    return f"<table class=kv>{''.join(rows)}</table>" if rows else ""


def _chart_figure(name: str, spec: dict, ds: str) -> str:
    svg = _svg(spec).encode("utf-8")
    title = spec.get("title", {}).get("text") if isinstance(spec.get("title"), dict) else spec.get("title")
    alt = html.escape(str(title or name))
    return (f"<figure><img alt='{alt}' src='{_data_uri('image/svg+xml', svg)}'>"
            f"<figcaption>{html.escape(caption(name, ds) or str(title or name))}</figcaption></figure>")


def _image_figure(name: str, png: bytes, links_from: str) -> str:
    kind, payload, note = _page_picture(png)
    text = html.escape(image_caption(name))
    img = f"<img alt='{text}' src='{_data_uri(kind, payload)}'>"
    if note:  # the thumbnail opens the full picture, which lies beside the page in the workspace
        href = html.escape(os.path.relpath(name, links_from).replace(os.sep, "/"))
        img = f"<a href='{href}'>{img}</a>"
        text += f" <small>({html.escape(note)}; click for the full picture)</small>"
    return f"<figure>{img}<figcaption>{text}</figcaption></figure>"


def _belongs(name: str, ds: str) -> bool:
    # Charts by their generated names (so dataset "pets-small" is not also "pets"), pictures by their folder.
    return name in chart_ids(ds) or ("." in Path(name).name and f"/{ds}/" in f"/{name}")


def _matches(name: str, ds: str, kinds: tuple[str, ...], images: bool) -> bool:
    if images:
        return any(Path(name).name.startswith(k) for k in kinds)
    kind = name.removeprefix(f"{ds}-")
    return any(kind == k or kind.endswith(f"-{k}") for k in kinds)


def _provenance_header(prov: dict) -> str:
    git = prov.get("git")
    commit = ("not a git repository" if git is None else
              f"<code>{html.escape(git['commit'])}</code> " +
              (f"<b>with uncommitted changes</b> ({html.escape(', '.join(git['changed'][:8]))}"
               f"{' …' if len(git['changed']) > 8 else ''})" if git["dirty"] else "(clean tree)"))
    rows = [("commit", commit), ("run", html.escape(prov.get("date", ""))),
            ("versions", html.escape(", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())))]
    backbones = {(d.get("backbone"), d.get("weights_sha256"), d.get("weights_source"))
                 for d in prov.get("datasets", {}).values()}
    backbones = {b for b in backbones if b[0]} or backbones  # datasets not embedded yet add no row
    for backbone, sha, source in sorted(backbones, key=str):
        rows.append(("backbone", f"{html.escape(str(backbone or 'not recorded'))}, weights sha256 "
                                 f"<code>{html.escape(str(sha or 'not recorded'))}</code>"
                                 + (f" <small>({html.escape(source)})</small>" if source else "")))
    params = prov.get("params") or {}
    if params:
        rows.append(("params", ", ".join(f"<code>{html.escape(k)}={html.escape(str(v))}</code>"
                                         for k, v in params.items())))
    table = "".join(f"<tr><th>{k}</th><td class=l>{v}</td></tr>" for k, v in rows)
    ds_rows = []
    for ds, d in prov.get("datasets", {}).items():
        images = d.get("images")
        counts = ", ".join(f"{k} {v}" for k, v in images.items()) if images else "not recorded"
        reasons = "; ".join(f"{v} {k}" for k, v in (d.get("rejected_reasons") or {}).items())
        rejected = "not recorded" if d.get("rejected") is None else str(d["rejected"])
        cells = (html.escape(d.get("title") or ds),
                 html.escape(f"{d.get('source') or 'not recorded'}: {d.get('location') or ''}"),
                 html.escape(counts), html.escape(str(d.get("n_classes") or "not recorded")),
                 html.escape(rejected) + (f"<br><small>{html.escape(reasons[:300])}</small>" if reasons else ""))
        ds_rows.append(f"<tr><th><a href='#ds-{html.escape(ds)}'>{html.escape(ds)}</a></th>"
                       + "".join(f"<td class=l>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in ("dataset", "name", "data source", "images per split", "classes",
                                             "rejected files"))
    return (f"<table class=kv>{table}</table>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(ds_rows)}</tbody></table>")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
td.l,.kv td{text-align:left}th{background:#f4f4f4}small{color:#666}.note{color:#555;font-size:12px}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:620px}
figcaption{font-size:12px;color:#444}
img{max-width:100%;border:1px solid #eee}.errors{color:#a00}dt{font-weight:bold}dd{margin:0 0 .4em 1.5em}
h2{border-bottom:2px solid #ddd;margin-top:2em}nav li{display:inline;margin-right:1em}
"""


def _study_section(readouts: Readouts) -> str:
    """`petprobe study`'s table and figures, and whether its test sets are this page's."""
    table = readouts.study
    current = readouts.provenance.get("params", {}).get("backbone")
    cells = []
    for row in table.itertuples(index=False):
        interval = lambda lo, hi: "" if math.isnan(lo) else f" <small>[{lo:.3f}, {hi:.3f}]</small>"  # noqa: E731
        values = [html.escape(str(row.backbone)) + (" <small>(this page)</small>" if row.backbone == current else ""),
                  html.escape(str(row.dataset)), html.escape(str(row.probe)),
                  f"{row.top1:.3f}{interval(row.top1_lo, row.top1_hi)}", f"{row.bacc:.3f}{interval(row.bacc_lo, row.bacc_hi)}",
                  _number(float(row.log_loss)), _number(float(row.ece)), str(row.n_test),
                  *("-" if math.isnan(v) else f"{v:.1f}" for v in (row.imagenet_acc1, row.params_m, row.img_per_s))]
        cells.append("<tr>" + "".join(f"<td class=l>{v}</td>" if i < 3 else f"<td>{v}</td>"
                                      for i, v in enumerate(values)) + "</tr>")
    head = ("backbone", "dataset", "probe", "top1 [95%]", "bacc [95%]", "log_loss", "ece", "n_test",
            "ImageNet top-1 %", "params (M)", "images/s")
    stale = []
    for ds, n in table.groupby("dataset")["n_test"].first().items():
        mine = readouts.summaries.get(f"metrics/{ds}.json", {}).get("n_test")
        if mine is not None and mine != n:
            stale.append(f"{ds}: {n} test images in the study, {mine} in the metrics of this page")
    warning = (f"<p class=errors>This study was run on other data ({html.escape('; '.join(stale))}): "
               "run <code>petprobe study</code> to compare backbones on these images.</p>" if stale else "")
    figures = "".join(_image_figure(f"metrics/study/{name}", png, "data/report")
                      for name, png in readouts.study_figures.items())
    unpublished = sorted(set(table.loc[table.imagenet_acc1.isna(), "backbone"]))
    if unpublished:
        figures += (f"<p class=note>No published ImageNet-1k top-1 for {html.escape(', '.join(unpublished))} "
                    "(the weights' source does not state one): not in the first figure.</p>")
    return (f"<h2 id=study>Backbone study</h2>{warning}<p>Which frozen backbone gets furthest on these images: one "
            "DVC experiment per backbone (<code>petprobe study</code>), the pipeline up to evaluate with "
            f"<code>-S backbone=&lt;name&gt;</code>. {html.escape(study_note())}."
            "</p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(cells)
            + f"</table>{figures}")


def render_page(readouts: Readouts, *, title: str, links_from: str = "data/report") -> str:
    """The HTML page (one string). ``links_from``: the page's folder relative to the repository
    root, from which thumbnails link to their full pictures."""
    datasets = [ds for ds in (_dataset_of(p) for p in sorted(readouts.summaries)) if ds]
    for name in readouts.images:  # a dataset with plots but no summary yet (evaluate not run) gets its section too
        parts = Path(name).parts
        ds = parts[1] if parts[0] == "metrics" and len(parts) > 2 else parts[2] if len(parts) > 3 else None
        if ds and ds not in datasets:
            datasets.append(ds)
    toc = "".join(f"<li><a href='#ds-{html.escape(ds)}'>{html.escape(ds)}</a></li>" for ds in datasets)
    if readouts.study is not None:
        toc += "<li><a href='#study'>backbone study</a></li>"
    toc += "<li><a href='#glossary'>glossary</a></li>" + ("<li><a href='#not-shown'>not shown</a></li>"
                                                          if readouts.errors else "")
    sections = [f"<h1>{html.escape(title)}</h1>", _provenance_header(readouts.provenance),
                f"<nav><b>Contents:</b><ul>{toc}</ul></nav>"]
    for ds in datasets:
        summary = readouts.summaries.get(f"metrics/{ds}.json", {})
        sections += [f"<h2 id='ds-{html.escape(ds)}'>{html.escape(ds)}</h2>", _headline_table(ds, summary)]
        if other := _dataset_metrics(ds, readouts.metrics):
            sections += ["<h3>Other headline numbers</h3>", other]
        for key, heading, chart_kinds, image_kinds in _SECTIONS:
            charts = [_chart_figure(n, spec, ds) for n, spec in readouts.charts.items()
                      if _belongs(n, ds) and _matches(n, ds, chart_kinds, images=False)]
            images = [_image_figure(n, png, links_from) for n, png in readouts.images.items()
                      if _belongs(n, ds) and _matches(n, ds, image_kinds, images=True)]
            if key == "calibration":
                heads = [h for h in head_names() if isinstance(summary.get(h), dict) and "ece" in summary[h]]
                text = "; ".join(f"{h}: ece {_number(summary[h]['ece'])}, log_loss {_number(summary[h].get('log_loss'))}"
                                 + _calibration_note(summary[h].get("calibration")) for h in heads)
                sections.append(f"<h3 id='{html.escape(ds)}-{key}'>{heading}</h3><p>{text or 'not measured'}. "
                                "ECE near 0 means the probabilities can be read as frequencies; a head with a lower "
                                "log_loss at equal top1 is the better calibrated one. Temperature scaling (Guo et al. "
                                f"2017) divides the logits by one T fitted on val: accuracy is unchanged.</p>{''.join(images)}")
                continue
            if charts or images:
                sections.append(f"<h3 id='{html.escape(ds)}-{key}'>{heading}</h3>{''.join(charts)}{''.join(images)}")
    # Plots no section claims (a plot added to dvc.yaml by hand): shown too, after the datasets.
    claimed = {n for ds in datasets for n in [*readouts.charts, *readouts.images] if _belongs(n, ds) and any(
        _matches(n, ds, kinds, images=n in readouts.images) for _, _, ck, ik in _SECTIONS
        for kinds in ((ik,) if n in readouts.images else (ck,)))}
    rest = [_chart_figure(n, spec, "") for n, spec in readouts.charts.items() if n not in claimed]
    rest += [_image_figure(n, png, links_from) for n, png in readouts.images.items() if n not in claimed]
    if rest:
        sections.append(f"<h2 id=other-plots>Other plots</h2>{''.join(rest)}")
        toc += "<li><a href='#other-plots'>other plots</a></li>"
        sections[2] = f"<nav><b>Contents:</b><ul>{toc}</ul></nav>"
    if readouts.study is not None:
        sections.append(_study_section(readouts))
    glossary = "".join(f"<dt id='g-{html.escape(k)}'>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                       for k, v in GLOSSARY.items())
    sections.append(f"<h2 id=glossary>Glossary</h2><dl>{glossary}</dl>")
    if readouts.errors:
        items = "".join(f"<li>{html.escape(e)}</li>" for e in readouts.errors)
        sections.append(f"<h2 id=not-shown>Not shown</h2><ul class=errors>{items}</ul>")
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=Content-Security-Policy content=\"{CSP}\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
