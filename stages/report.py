"""report: one self-contained HTML page of the experiment, readable offline (data/report/index.html).

Reads backbone (for the title). Shows what dvc.yaml declares, as `dvc metrics show` and
`dvc plots show` see it: the headline table of every dataset and head, the other metrics, each
named plot drawn to SVG (vl-convert, no JavaScript) and every image plot, all inlined.
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
    readouts = collect(".")
    page = render_page(readouts, title=f"petprobe results: {params.backbone} backbone")
    path = Artefacts.report_page()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, page)
    print(f"report: {path} ({len(page) / 1e6:.1f} MB): {len(readouts.metrics)} metrics files, "
          f"{len(readouts.charts)} plots, {len(readouts.images)} pictures"
          + (f", {len(readouts.errors)} not shown (listed on the page)" if readouts.errors else ""), file=sys.stderr)


if __name__ == "__main__":
    reports_errors(main)()
