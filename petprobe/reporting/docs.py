"""Result tables in README.md and docs/, generated from metrics/: no figure is typed by hand.

    python -m petprobe.reporting.docs            # rewrite every generated block from metrics/
    python -m petprobe.reporting.docs --check    # exit 1, naming each block, if one differs

A generated block sits between two comment lines in a Markdown file::

    <!-- generated: heads -->
    ...                              (written by this module; edits here are overwritten)
    <!-- end generated -->

``heads`` names a table in ``TABLES``. A ``Table`` has one column per dataset and one ``Row`` per
figure, so a new metric is one new line: ``Row(label, file, key)``, where ``file`` is a path under
metrics/ with ``{ds}`` for the dataset and ``key`` a dotted path into its JSON (``ci=True`` adds the
``<key>_ci95`` interval beside it). An ``EpsTable`` shows a list file (one row per element: a JSON
list, or a CSV such as the backbone study's ``study/study.csv``, an empty cell being "n/a"). A key
that is missing is an error naming the table, the row, the file and the key, unless the row is
``optional`` (then the cell says "n/a"): a renamed metric must be renamed here too, never silently
dropped. Numbers are printed with ``digits`` decimals, intervals as ``[lo, hi]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from petprobe.catalogue import KNN, LOGREG, TORCH_HEAD, HeadEntry
from petprobe.errors import PetprobeError, reports_errors

__all__ = ["Row", "Table", "EpsTable", "TABLES", "DOC_FILES", "render_table", "regenerate", "main"]

DATASETS = ("pets", "catsdogs")  # the reference workloads whose metrics are committed
DOC_FILES = ("README.md", "docs/results.md")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
MISSING = "n/a"


@dataclass(frozen=True)
class Row:
    label: str
    file: str  # under metrics/, "{ds}" = the dataset
    key: str  # dotted path into the JSON
    ci: bool = False  # show "<key>_ci95" as [lo, hi] beside the value
    digits: int = 3
    optional: bool = False  # a missing key is "n/a" instead of an error (e.g. top-3 with 2 classes)


@dataclass(frozen=True)
class Table:
    """Rows of figures, one column per dataset."""

    rows: tuple[Row, ...]
    datasets: tuple[str, ...] = DATASETS
    corner: str = ""


@dataclass(frozen=True)
class EpsTable:
    """One dataset's list file (``render_eps.json``): one row per element, ``columns`` (header, key, digits)."""

    dataset: str
    file: str
    columns: tuple[tuple[str, str, int], ...] = field(default_factory=tuple)


def _head_rows(entry: HeadEntry) -> tuple[Row, ...]:
    head, name = entry.name, entry.label
    return (
        Row(f"{name}: top-1 [95% Wilson interval]", "{ds}.json", f"{head}.top1", ci=True),
        Row(f"{name}: balanced accuracy [95% interval]", "{ds}.json", f"{head}.balanced_accuracy", ci=True),
        Row(f"{name}: top-3", "{ds}.json", f"{head}.top3", optional=True),
        Row(f"{name}: log-loss", "{ds}.json", f"{head}.log_loss"),
        Row(f"{name}: ECE (15 bins)", "{ds}.json", f"{head}.ece"),
    )


TABLES: dict[str, Table | EpsTable] = {
    "headline": Table(corner="test split", rows=(
        Row("test images", "{ds}.json", "n_test", digits=0),
        *(Row(f"{head.label}: top-1 [95% Wilson interval]", "{ds}.json", f"{head.name}.top1", ci=True)
          for head in (LOGREG, TORCH_HEAD, KNN)),
        Row("torch head: sd of top-1 over its training seeds", "{ds}.json", "head.seeds.top1.sd"),
    )),
    "heads": Table(corner="test split", rows=(
        Row("test images", "{ds}.json", "n_test", digits=0),
        Row("files rejected by prepare", "{ds}.json", "n_rejected", digits=0),
        *_head_rows(LOGREG),
        Row("logistic probe: chosen C", "{ds}.json", "logreg.C", digits=4),
        Row("logistic probe: C of the grid not converged (never chosen)", "{ds}/logreg_search.json",
            "n_C_not_converged", digits=0),
        Row("test images with a near-twin in train or val", "{ds}/near_duplicates.json", "test_twins", digits=0),
        Row("val images with a near-twin in train", "{ds}/near_duplicates.json", "val_twins", digits=0),
        *_head_rows(TORCH_HEAD),
        Row("torch head: best epoch (early stopping)", "{ds}/train_head/metrics.json", "best_epoch", digits=0),
        Row("torch head: epochs run", "{ds}/train_head/metrics.json", "epochs_run", digits=0),
        # The torch head over its training seeds, and its temperature scaling (before -> after).
        Row("torch head: seeds trained", "{ds}.json", "head.seeds.n_seeds", digits=0),
        Row("torch head: top-1 over seeds, mean", "{ds}.json", "head.seeds.top1.mean"),
        Row("torch head: top-1 over seeds, sd", "{ds}.json", "head.seeds.top1.sd"),
        Row("torch head: temperature (fitted on val)", "{ds}.json", "head.calibration.temperature"),
        Row("torch head: ECE before temperature scaling", "{ds}.json", "head.calibration.ece_uncalibrated"),
        Row("torch head: log-loss before temperature scaling", "{ds}.json", "head.calibration.log_loss_uncalibrated"),
        *_head_rows(KNN),
    )),
    "render": Table(corner="render (torch head)", rows=(
        Row("targeted PGD success at 4/255", "{ds}/render_headline.json", "pgd4_success"),
        Row("transfer to a second backbone at 4/255", "{ds}/render_headline.json", "pgd4_transfer"),
        Row("ideal images: p(target), optimised model, held-out transforms", "{ds}/render_headline.json",
            "ideal_p_heldout"),
        Row("ideal images: p(target), second backbone (mobilenet_v2) probe", "{ds}/render.json",
            "ideal_summary.p_target_mobilenet_v2.mean", optional=True),
        Row("ideal images: p(target), optimised model and transforms (secondary)", "{ds}/render.json",
            "ideal_summary.p_target_optimisation_transforms.mean"),
        Row("ideal images: chance (1 / classes)", "{ds}/render.json", "ideal_summary.chance"),
    )),
    "explain": Table(corner="explain (torch head)", rows=(
        Row("localisation images (with a trimap)", "{ds}/explain.json", "localisation.n_images", digits=0),
        Row("Grad-CAM pet share", "{ds}/explain.json", "localisation.grad_cam.pet_share", ci=True, optional=True),
        Row("Grad-CAM pointing", "{ds}/explain.json", "localisation.grad_cam.pointing", optional=True),
        Row("Grad-CAM pet share minus uniform map's", "{ds}/explain.json",
            "localisation.grad_cam.pet_share_minus_uniform", ci=True, optional=True),
        Row("integrated gradients pet share", "{ds}/explain.json", "localisation.integrated_gradients.pet_share",
            ci=True, optional=True),
        Row("uniform map pet share", "{ds}/explain.json", "localisation.uniform.pet_share", ci=True, optional=True),
        Row("centred Gaussian pet share", "{ds}/explain.json", "localisation.centred_gaussian.pet_share", ci=True,
            optional=True),
        Row("centred Gaussian pointing", "{ds}/explain.json", "localisation.centred_gaussian.pointing", optional=True),
        Row("faithfulness images", "{ds}/explain.json", "faithfulness.n_images", digits=0),
        Row("Grad-CAM deletion AUC (lower is better)", "{ds}/explain.json", "faithfulness.grad_cam.deletion_auc", ci=True),
        Row("Grad-CAM deletion AUC minus random order's", "{ds}/explain.json",
            "faithfulness.grad_cam.deletion_auc_minus_random", ci=True),
        Row("Grad-CAM insertion AUC (higher is better)", "{ds}/explain.json", "faithfulness.grad_cam.insertion_auc",
            ci=True),
        Row("integrated gradients deletion AUC", "{ds}/explain.json", "faithfulness.integrated_gradients.deletion_auc",
            ci=True),
        Row("integrated gradients insertion AUC", "{ds}/explain.json",
            "faithfulness.integrated_gradients.insertion_auc", ci=True),
        Row("random order deletion AUC", "{ds}/explain.json", "faithfulness.random.deletion_auc", ci=True),
        Row("random order insertion AUC", "{ds}/explain.json", "faithfulness.random.insertion_auc", ci=True),
        Row("integrated gradients: completeness error (mean; paper asks < 0.05)", "{ds}/explain.json",
            "integrated_gradients.completeness_error", ci=True),
        Row("integrated gradients: images over 0.05", "{ds}/explain.json", "integrated_gradients.n_over_tolerance",
            digits=0),
        Row("images with a constant Grad-CAM map", "{ds}/explain.json", "constant_maps.grad_cam", digits=0),
        Row("sanity: Grad-CAM rank correlation, head re-drawn", "{ds}/explain.json", "sanity.grad_cam.head"),
        Row("sanity: integrated gradients rank correlation, head re-drawn", "{ds}/explain.json",
            "sanity.integrated_gradients.head"),
    )),
    **{f"fewshot-{ds}": EpsTable(ds, f"{ds}/fewshot_curve.json", columns=(
        ("images per class", "label", 0), ("logreg top-1", LOGREG.name, 3), ("sd", f"{LOGREG.name}_sd", 3),
        ("kNN top-1", KNN.name, 3), ("sd", f"{KNN.name}_sd", 3), ("draws", f"{LOGREG.name}_draws", 0)))
      for ds in DATASETS},
    # `petprobe study` on the sample (metrics/study/, written by that command, not by dvc repro).
    "study": EpsTable("", "study/study.csv", columns=(
        ("backbone", "backbone", 0), ("dataset", "dataset", 0), ("probe", "probe", 0), ("top-1", "top1", 3),
        ("95% lo", "top1_lo", 3), ("95% hi", "top1_hi", 3), ("balanced acc.", "bacc", 3), ("log-loss", "log_loss", 3),
        ("ECE", "ece", 3), ("test images", "n_test", 0), ("ImageNet top-1 (%)", "imagenet_acc1", 1),
        ("params (M)", "params_m", 1), ("images/s (embed, fp32)", "img_per_s", 1))),
    **{f"attacks-{ds}": EpsTable(ds, f"{ds}/render_eps.json", columns=(
        ("eps (/255)", "eps_255", 0),
        ("attacked images", "n_images", 0),
        ("white-box success", "success", 3),
        ("after the 8-bit PNG round trip", "png_model_input_success", 3),
        ("the PNG through `petprobe predict`", "png_via_predict_success", 3),
        ("transferred (of clean-correct)", "transfer_success_of_clean_correct", 3),
        ("transferred (of white-box successes)", "transfer_success_of_whitebox_success", 3),
    )) for ds in DATASETS},
}


def _load(metrics: Path, name: str, cache: dict) -> object:
    if name not in cache:
        path = metrics / name
        try:
            if path.suffix == ".csv":
                with path.open(newline="") as fh:
                    cache[name] = [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(fh)]
            else:
                cache[name] = json.loads(path.read_text())
        except FileNotFoundError:
            raise PetprobeError(f"{path} is missing (run dvc repro, or dvc pull, first)") from None
        except json.JSONDecodeError as err:
            raise PetprobeError(f"{path} is not valid JSON ({err})") from None
    return cache[name]


def _csv_value(text: str):
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def _lookup(data: object, key: str):
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            raise KeyError(key)
        data = data[part]
    return data


def _number(value, digits: int) -> str:
    if value is None:  # a figure with nothing to measure (e.g. transfer when no white-box attack succeeded)
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}"


def _cell(row: Row, data: object, where: str) -> str:
    try:
        text = _number(_lookup(data, row.key), row.digits)
        if row.ci:
            interval = _lookup(data, f"{row.key}_ci95")
            if interval is None:
                return text
            lo, hi = interval
            text += f" [{_number(lo, row.digits)}, {_number(hi, row.digits)}]"
        return text
    except KeyError as err:
        if row.optional:
            return MISSING
        raise PetprobeError(f"{where}, row '{row.label}': {row.file} has no key '{err.args[0]}'") from None


def render_table(name: str, metrics: Path, cache: dict | None = None) -> str:
    """The Markdown of table ``name`` from the metrics folder ``metrics``."""
    cache = {} if cache is None else cache
    if name not in TABLES:
        raise PetprobeError(f"docs table '{name}' is not defined (defined: {', '.join(sorted(TABLES))})")
    table = TABLES[name]
    if isinstance(table, EpsTable):
        rows = _load(metrics, table.file, cache)
        if not isinstance(rows, list):
            raise PetprobeError(f"docs table '{name}': {table.file} is not a list")
        lines = ["| " + " | ".join(header for header, _, _ in table.columns) + " |",
                 "|" + "---|" * len(table.columns)]
        for element in rows:
            cells = [_cell(Row(header, table.file, key, digits=digits), element, f"docs table '{name}'")
                     for header, key, digits in table.columns]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    lines = ["| " + " | ".join((table.corner, *table.datasets)) + " |", "|---|" + "---|" * len(table.datasets)]
    for row in table.rows:
        cells = [_cell(row, _load(metrics, row.file.format(ds=ds), cache), f"docs table '{name}'")
                 for ds in table.datasets]
        lines.append("| " + " | ".join((row.label, *cells)) + " |")
    return "\n".join(lines) + "\n"


def regenerate(text: str, metrics: Path, where: str = "") -> str:
    """``text`` with every generated block rewritten from ``metrics``."""
    cache: dict = {}

    def block(match: re.Match) -> str:
        try:
            body = render_table(match["name"], metrics, cache)
        except PetprobeError as err:
            raise PetprobeError(f"{where}: {err}" if where else str(err)) from None
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(block, text)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petprobe.reporting.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated block differs")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the repository root (default: here)")
    args = parser.parse_args(argv)
    stale = []
    for name in DOC_FILES:
        path = args.repo / name
        text = path.read_text()
        new = regenerate(text, args.repo / "metrics", name)
        if new != text:
            stale.append(name)
            if not args.check:
                _write(path, new)
    for name in stale:
        verb = "differs from what metrics/ gives; run python -m petprobe.reporting.docs" if args.check else "rewritten"
        print(f"{name}: {verb}", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
