"""headline@<ds>: the dataset's headline numbers in one row, the only metric `dvc metrics show` lists.

Reads no params. Copies n_test and each trained head's top1 (as <head>_top1; a head trained with
several seeds also its sd over them, <head>_top1_sd) from metrics/<ds>/<head>/headline.json, and every key of render_headline.json,
explain_headline.json and near_twins.json, into metrics/<ds>/headline.json
(petprobe.reporting.headline says why). Numbers are copied, never recomputed.
"""

from __future__ import annotations

import json
import sys

from petprobe.artefacts import Artefacts
from petprobe.catalogue import TRAINED
from petprobe.errors import run_stage
from petprobe.outputs import write_json
from petprobe.reporting.headline import dataset_headline


def main(ds: str) -> None:
    artefacts = Artefacts(ds)
    heads = {name: json.loads(artefacts.head_headline(name).read_text()) for name in TRAINED}
    others = [json.loads(path.read_text()) for path in
              (artefacts.render_headline, artefacts.explain_headline, artefacts.near_twins)]
    row = dataset_headline(heads, *others)
    write_json(artefacts.dataset_headline, row)
    print(f"headline@{ds}: {len(row)} numbers in {artefacts.dataset_headline}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
