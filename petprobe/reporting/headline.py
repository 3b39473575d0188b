"""One dense row of a dataset's headline numbers for ``dvc metrics show``.

Each stage still writes its own few numbers (evaluate one file per trained head, render, explain and
duplicates one each, as plain outputs). ``dataset_headline`` copies them, unchanged, into one flat
dict, metrics/<ds>/headline.json, the only file dvc.yaml declares as a metric, so the table has one
row per dataset instead of eight mostly empty ones. Keys are short because the table must fit 200
columns: a head's number is ``<head>_top1`` (and ``<head>_top1_sd``, its sd over training seeds, for
a head trained with several); with three trained heads a ``<head>_bacc`` (balanced
accuracy) column each would take it to 228, so balanced accuracy, the intervals, log-loss and ECE
stay in metrics/<ds>.json, which the report shows in full.
"""

from __future__ import annotations

__all__ = ["HEAD_KEYS", "dataset_headline", "head_key"]

# A head's numbers in the row, by their name in <head>/headline.json.
HEAD_KEYS = {"top1": "top1", "top1_seed_sd": "top1_sd"}  # the sd over training seeds, for a seeded head


def head_key(head: str, key: str) -> str:
    """The row's key for ``key`` of ``head`` (``HEAD_KEYS`` names which ones go in the row)."""
    return f"{head}_{HEAD_KEYS[key]}"


def dataset_headline(heads: dict[str, dict], *others: dict) -> dict:
    """``{n_test, <head>_top1, ...}`` from each head's headline, then every key of ``others``.

    The numbers are copied, not recomputed. The heads must agree on n_test, and a key may come from
    one place only: a clash is a ValueError naming it (two stages claiming one column).
    """
    row: dict = {}
    n_tests = {numbers["n_test"] for numbers in heads.values() if "n_test" in numbers}
    if len(n_tests) > 1:
        raise ValueError(f"the heads were scored on different test sets (n_test {sorted(n_tests)})")
    if n_tests:
        row["n_test"] = n_tests.pop()
    for head, numbers in heads.items():
        row.update({head_key(head, key): numbers[key] for key in HEAD_KEYS if key in numbers})
    for other in others:
        if clash := sorted(row.keys() & other.keys()):
            raise ValueError(f"headline key(s) {', '.join(clash)} written by two stages")
        row.update(other)
    return row
