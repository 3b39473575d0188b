"""The named plots of every dataset, from one definition: dvc.yaml's top-level ``plots:`` is generated.

DVC has no ``foreach`` for top-level plots, and stage-level plots can neither overlay two files
(train and val curves) nor draw several fields of one file (the attack and deletion curves), so
the plots of a dataset come from :func:`dataset_plots` and ``python -m petprobe.reporting.plots``
rewrites dvc.yaml's ``plots:`` for the datasets of params.yaml (tests/test_report_plots.py holds
dvc.yaml equal to it). The report reads the same module for each plot's caption: what to read
from it. The Vega-Lite templates named here live in ``.dvc/plots/`` (colour by series, counts in
confusion cells, fold error bars); ``dvc plots show`` and the report both draw with them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

__all__ = ["plotted_heads", "dataset_plots", "chart_ids", "plots_section", "caption", "image_caption", "write_dvc_yaml"]

_MARKER = "# Named plots"


def plotted_heads() -> tuple[str, ...]:
    """The trained heads evaluate draws a confusion matrix, F1 bars and a mistakes grid for."""
    from petprobe.catalogue import TRAINED

    return TRAINED


def calibrated_heads() -> tuple[str, ...]:
    """The trained heads evaluate draws a reliability diagram for (temperature-scaled ones)."""
    from petprobe.catalogue import HEADS

    return tuple(name for name in plotted_heads() if HEADS[name].calibrated)


# plot kind -> (title after "<ds>: ", template, x, {file: y} relative to the dataset, x label, y label, caption)
_CHARTS = {
    "logreg-C-search": (
        "logistic probe, cross-validated log-loss per C (mean ± 1 sd over folds)", "petprobe_c_search",
        "log10_C", {"metrics/{ds}/logreg_search.json": "cv_log_loss_mean"},
        "log10(C), C = inverse regularisation strength (unitless)", "CV log-loss (nats, lower is better)",
        "The dashed rule marks the C the probe uses (the smallest C within one standard error of the lowest "
        "mean); flat curves near it mean the choice matters little."),
    "head-loss": (
        "torch head, cross-entropy per epoch", "petprobe_series", "step",
        {"metrics/{ds}/train_head/plots/metrics/train/loss.tsv": "loss",
         "metrics/{ds}/train_head/plots/metrics/val/loss.tsv": "loss"},
        "epoch", "cross-entropy (nats)",
        "Train vs val loss: a val curve that turns up while train keeps falling is overfitting; "
        "early stopping picks the epoch of the lowest val loss."),
    "head-accuracy": (
        "torch head, top-1 accuracy per epoch", "petprobe_series", "step",
        {"metrics/{ds}/train_head/plots/metrics/train/accuracy.tsv": "accuracy",
         "metrics/{ds}/train_head/plots/metrics/val/accuracy.tsv": "accuracy"},
        "epoch", "top-1 accuracy (fraction)",
        "The gap between train and val accuracy is how much the head memorises."),
    "attack-success-vs-eps": (
        "targeted PGD success vs L-inf radius (pooled attack pairs)", "petprobe_series", "eps_255",
        {"metrics/{ds}/render_eps.json": ["success", "png_model_input_success", "png_via_predict_success",
                                          "transfer_success_of_clean_correct",
                                          "transfer_success_of_whitebox_success"]},
        "eps (L-inf radius, /255 of the pixel range)", "attack success (fraction of attacked test images)",
        "White-box success in the model's own input space vs after saving as PNG and classifying "
        "through `petprobe predict`, and transfer to another backbone: a gap means the attack "
        "does not survive the real input path."),
    "explain-deletion": (
        "deletion curve, p(predicted class) as 16-px squares are removed in map order", "petprobe_series",
        "fraction", {"metrics/{ds}/explain_deletion.json": ["grad_cam", "integrated_gradients", "random"]},
        "fraction of the image removed", "p(predicted class)",
        "A faithful map drops the probability faster than random order (lower area is better)."),
    "explain-insertion": (
        "insertion curve, p(predicted class) as 16-px squares are restored in map order", "petprobe_series",
        "fraction", {"metrics/{ds}/explain_insertion.json": ["grad_cam", "integrated_gradients", "random"]},
        "fraction of the image restored", "p(predicted class)",
        "A faithful map raises the probability faster than random order (higher area is better)."),
}
_HEAD_CHARTS = {
    "confusion": (
        "confusion matrix on the test split", "petprobe_confusion", "actual",
        {"metrics/{ds}/{head}/confusion.csv": "predicted"},
        "true class", "predicted class",
        "Counts of test images; everything off the diagonal is a mistake (the number in each cell)."),
    "per-class-f1": (
        "F1 per class on the test split", "bar_horizontal_sorted", "f1", {"metrics/{ds}/{head}/per_class.csv": "class"},
        "F1 (test split, 0-1)", "class",
        "The weakest classes are at the bottom; with few test images per class one mistake moves F1 a lot."),
}
def _fewshot_spec() -> tuple:
    from petprobe.catalogue import KNN, LOGREG

    return ("few-shot test top-1 vs labelled images per class (mean over draws)", "petprobe_fewshot", "shots",
            {"metrics/{ds}/fewshot_curve.json": [LOGREG.name, KNN.name]},
            "labelled images per class, k (log scale; the last point: all of train+val)",
            "test top-1 (fraction, mean over random draws)",
            "How many labels the frozen features need: each point is the mean test top-1 over random draws of k "
            "images per class from train+val (fewshot.json holds every draw and the sd). kNN needs no tuning; "
            "the logistic probe keeps the C chosen on all of train+val.")


_CHART_ORDER = ("logreg-C-search", "head-loss", "head-accuracy", "{head}-confusion", "{head}-per-class-f1",
                "attack-success-vs-eps", "explain-deletion", "explain-insertion")

# Image plots: file-name pattern -> what the picture shows (the report's caption).
_IMAGES = (
    (r"accuracy_vs_imagenet\.png", "Backbone study: logistic-probe top-1 (95% interval) against the backbone's published "
                                    "ImageNet-1k top-1, per dataset (Kornblith et al. 2019, figure 1); a backbone "
                                    "without a published figure is not drawn."),
    (r"accuracy_vs_throughput\.png", "Backbone study: logistic-probe top-1 (95% interval) against embedding "
                                      "throughput on the machine that ran the study: up and right is better."),
    (r"samples\.png", "Training images as the pipeline read them, a few per class: check the labels and crops."),
    (r"misclassified\.png", "The {head}'s most confident mistakes on the test split (true → predicted, p)."),
    (r"reliability\.png", "The {head}'s reliability diagram on the test split: accuracy against confidence per "
                           "bin, before and after temperature scaling (on the diagonal: calibrated)."),
    (r"curves\.png", "DVCLive's own picture of the torch head's training curves."),
    (r"ideal\.png", "Ideal images: pixels optimised to maximise one class's probability; "
                    "recognisable parts mean the head uses them."),
    (r"attack_(.+)_to_(.+)\.png", "Targeted attack {0} → {1}: clean image, amplified perturbation, "
                                  "adversarial image and the predicted probabilities."),
    (r"attribution_classes\.png", "Grad-CAM and integrated-gradients maps, one test image per class."),
    (r"attribution_mistakes\.png", "Attribution maps of the most confident mistakes: what misled the model."),
    (r"deletion_insertion\.png", "Deletion and insertion curves of single images, per attribution method."),
    (r"feature_maps\.png", "The most active backbone channels at four depths, early to late."),
    (r"localisation\.png", "Attribution maps over the Oxford-IIIT trimaps: how much of the map lies on the pet."),
    (r"sanity\.png", "Sanity check: maps of the trained model vs models with re-drawn weights "
                     "(similar maps mean the method ignores the model)."),
)


def _chart(ds: str, kind: str, spec: tuple, head: str | None = None) -> dict:
    title, template, x, ys, x_label, y_label, _ = spec
    who = f"{ds}, {head}" if head else ds
    return {f"{ds}-{kind}": {
        "title": f"{who}: {title}", "template": template, "x": x,
        "y": {path.format(ds=ds, head=head): y for path, y in ys.items()},
        "x_label": x_label, "y_label": y_label}}


def dataset_plots(ds: str) -> list:
    """Every plot of dataset ``ds`` as dvc.yaml's top-level ``plots:`` lists them."""
    out: list = []
    for kind in _CHART_ORDER[:3]:
        out.append(_chart(ds, kind, _CHARTS[kind]))
    out.append(_chart(ds, "fewshot", _fewshot_spec()))
    for head in plotted_heads():
        for kind, spec in _HEAD_CHARTS.items():
            out.append(_chart(ds, f"{head}-{kind}", spec, head))
    out.append(_chart(ds, "attack-success-vs-eps", _CHARTS["attack-success-vs-eps"]))
    out += [f"metrics/{ds}/samples.png", *(f"metrics/{ds}/{head}/misclassified.png" for head in plotted_heads()),
            *(f"metrics/{ds}/{head}/reliability.png" for head in calibrated_heads()),
            f"metrics/{ds}/train_head/plots/images/curves.png", f"data/render/{ds}"]
    out += [_chart(ds, kind, _CHARTS[kind]) for kind in ("explain-deletion", "explain-insertion")]
    out.append(f"data/explain/{ds}")
    return out


def chart_ids(ds: str) -> set[str]:
    """The names of dataset ``ds``'s charts (its image plots are named by their paths)."""
    return {next(iter(p)) for p in dataset_plots(ds) if isinstance(p, dict)}


def caption(plot_id: str, ds: str) -> str:
    """What to read from the named chart ``plot_id`` of dataset ``ds`` ("" for one not defined here)."""
    kind = plot_id.removeprefix(f"{ds}-")
    if kind in _CHARTS:
        return _CHARTS[kind][-1]
    if kind == "fewshot":
        return _fewshot_spec()[-1]
    for head in plotted_heads():
        if kind.startswith(f"{head}-") and kind[len(head) + 1:] in _HEAD_CHARTS:
            return _HEAD_CHARTS[kind[len(head) + 1:]][-1]
    return ""


def image_caption(path: str) -> str:
    """What the picture at ``path`` shows, from its file name (its parent folder names the head)."""
    p = Path(path)
    for pattern, text in _IMAGES:
        if m := re.fullmatch(pattern, p.name):
            return text.format(*(g.replace("_", " ") for g in m.groups()), head=p.parent.name)
    return p.name


def plots_section(datasets: list[str]) -> str:
    """The YAML text of dvc.yaml's ``plots:``, from the marker comment to the end of the file."""
    body = yaml.safe_dump({"plots": [p for ds in datasets for p in dataset_plots(ds)]},
                          sort_keys=False, width=1000, allow_unicode=True)
    return (f"{_MARKER} (`dvc plots show`, `dvc plots diff <rev>`), the same set for every dataset of\n"
            "# params.yaml's `datasets:`. GENERATED by `python -m petprobe.reporting.plots` from\n"
            "# petprobe/reporting/plots.py (DVC has no foreach for top-level plots): after adding a dataset,\n"
            "# run it, then `dvc repro -f report`. Every PNG is an image plot (side by side in `dvc plots diff`).\n"
            + body)


def write_dvc_yaml(root: Path = Path(".")) -> Path:
    """Rewrite ``root``/dvc.yaml's plots for the datasets in ``root``/params.yaml; the stages are kept as written."""
    path = root / "dvc.yaml"
    text = path.read_text()
    stages = text[:text.index(_MARKER)] if _MARKER in text else text.rstrip("\n") + "\n\n"
    datasets = yaml.safe_load((root / "params.yaml").read_text())["datasets"]
    path.write_text(stages + plots_section(list(datasets)))
    return path


if __name__ == "__main__":
    print(f"wrote {write_dvc_yaml(Path(sys.argv[1]) if len(sys.argv) > 1 else Path('.'))}", file=sys.stderr)
