"""duplicates@<ds>: near-duplicate photos across splits, listed and counted.

Reads data.near_duplicate_bits and data.near_duplicate_cosine. From prepare's manifest (with each
image's perceptual hash) and embed's embeddings it writes metrics/<ds>/near_duplicates.csv, every
(test, train or val) and (val, train) pair that the pHash (at most near_duplicate_bits of 64 bits
apart) or the centred embedding cosine (at least near_duplicate_cosine) calls near;
metrics/<ds>/near_duplicates.json, their counts (test_twins: test images with a near-twin in train
or val; val_twins: val images with one in train; pairs by measure; the thresholds and backbone); and
metrics/<ds>/near_twins.json, test_twins alone, which headline@<ds> copies into `dvc metrics show`'s
row. See petprobe.data.duplicates for the measures and thresholds.
"""

from __future__ import annotations

import sys

from petprobe.artefacts import Artefacts
from petprobe.data.duplicates import audit_summary, cross_split_pairs
from petprobe.errors import run_stage
from petprobe.outputs import write_csv, write_json
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    data = params.data
    artefacts = Artefacts(ds)
    manifest, _ = artefacts.read_manifest()
    hashes = artefacts.read_phashes(manifest)
    X = artefacts.read_embeddings(manifest)
    pairs = cross_split_pairs(manifest, hashes, X, max_bits=data.near_duplicate_bits,
                              min_cosine=data.near_duplicate_cosine)
    summary = audit_summary(manifest, pairs, max_bits=data.near_duplicate_bits, min_cosine=data.near_duplicate_cosine)
    summary["backbone"] = artefacts.read_embeddings_meta()["backbone"]  # whose embeddings the cosine compares
    write_csv(artefacts.near_duplicates_csv, pairs)
    write_json(artefacts.near_duplicates_report, summary)
    write_json(artefacts.near_twins, {"test_twins": summary["test_twins"]})
    print(f"duplicates@{ds}: {summary['test_twins']} of {summary['n_test']} test images have a near-twin in train "
          f"or val, {summary['val_twins']} of {summary['n_val']} val images one in train ({summary['pairs']} "
          f"pair(s) listed in {artefacts.near_duplicates_csv})", file=sys.stderr)

if __name__ == "__main__":
    run_stage(main)
