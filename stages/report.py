"""report: one self-contained HTML page of the experiment, readable offline (data/report/index.html).

Reads datasets (whose sections the page has), backbone (for the title), and the seeds and key
params it lists in the page's header. Shows what dvc.yaml declares, as `dvc metrics show` and
`dvc plots show` see it, one section per dataset: the headline table, the other metrics, each named
plot drawn to SVG (vl-convert, no JavaScript) with a caption, every image plot as a thumbnail
linking to the full PNG; provenance and a glossary.
"""

from __future__ import annotations

import sys

from petprobe.artefacts import Artefacts
from petprobe.errors import reports_errors
from petprobe.outputs import write_text
from petprobe.params import load_params
from petprobe.reporting.report import collect, render_page


def main() -> None:
    params = load_params()
    shown = {
        "backbone": params.backbone,
        "data.seed": params.data.seed, "data.max_per_class": params.data.max_per_class,
        "logreg.seed": params.logreg.seed, "logreg.cv_folds": params.logreg.cv_folds,
        "head.seed": params.head.seed, "head.hidden": params.head.hidden, "head.max_epochs": params.head.max_epochs,
        "knn.k": params.knn.k, "knn.temperature": params.knn.temperature,
        "render.seed": params.render.seed, "render.head": params.render.head,
        "explain.seed": params.explain.seed, "explain.head": params.explain.head,
    }
    readouts = collect(".", params=shown, datasets=params.datasets)
    page = render_page(readouts, title=f"petprobe results: {params.backbone} backbone")
    path = Artefacts.report_page()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)
    print(f"report: {path} ({len(page) / 1e6:.1f} MB): {len(readouts.summaries)} datasets, "
          f"{len(readouts.metrics)} metrics files, {len(readouts.charts)} plots, {len(readouts.images)} pictures"
          + (f", {len(readouts.errors)} not shown (listed on the page)" if readouts.errors else ""), file=sys.stderr)


if __name__ == "__main__":
    reports_errors(main)()
