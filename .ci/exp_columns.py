"""Count the columns of `dvc exp show` (run in a repo with at least one experiment) and check the budget.

The table has Experiment, Created, one column per metric number, per param and per dependency
file (DVC lists every dep of every stage; params.yaml's keys and the code deps are most of the
width, and dvc.yaml cannot trim them). The budget: the metrics (what this project controls)
fit in 40 columns, and the README's narrowed view,
    dvc exp show --only-changed --drop '^(data/|stages/|petprobe/|metrics$)'
fits in 40 columns in all.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

NARROW = ["--only-changed", "--drop", "^(data/|stages/|petprobe/|metrics$)"]
BUDGET = 40
_CSV_ONLY = {"rev", "typ", "parent", "State", "Executor"}  # merged into Experiment or empty in the table


def columns(*args: str) -> list[str]:
    out = subprocess.run(["dvc", "exp", "show", "--no-pager", "--csv", *args], capture_output=True, text=True,
                         check=True).stdout
    header = next(csv.reader(io.StringIO(out)))
    return [c for c in header if c not in _CSV_ONLY]


def main() -> int:
    import json

    data = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    metric_names = set()

    def leaves(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(f"{prefix}.{k}", v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            yield prefix

    def walk(entries):
        for entry in entries:
            for path, item in ((entry.get("data") or {}).get("metrics") or {}).items():
                metric_names.update(leaves(path, item.get("data", {})))
            for exp in entry.get("experiments") or []:
                walk(exp.get("revs") or [])

    walk(data)
    plain, narrow = columns(), columns(*NARROW)
    print(f"dvc exp show: {len(plain)} columns ({len(metric_names)} metrics); "
          f"with {' '.join(NARROW)}: {len(narrow)} columns")
    print("narrowed view:", ", ".join(narrow))
    return 0 if len(metric_names) <= BUDGET and len(narrow) <= BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
