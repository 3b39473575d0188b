"""Compare pipeline runs for the reproducibility promises .ci/run checks.

    python .ci/compare_runs.py same LOCK_A METRICS_A LOCK_B METRICS_B
        two runs on one machine: every output hash and every metrics file identical.
    python .ci/compare_runs.py committed COMMITTED_LOCK COMMITTED_METRICS LOCK METRICS
        a run against what is committed (made on another machine): bit-stable stages
        (download, prepare) identical; headline metrics within tolerance (float reductions,
        bf16 vs fp32 on CPUs without native bf16).

Exits 1 with one line per broken promise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

# Stages whose outputs depend only on file bytes and seeds: identical on every machine.
BIT_STABLE = ("download@", "prepare@")
# Accuracy-type metrics may move by a couple of test images between CPU kinds.
ACCURACY_TOLERANCE = 0.04
EXACT_METRICS = ("n_test", "n_rejected")


def outs(lock_path: Path) -> dict[str, str]:
    lock = yaml.safe_load(lock_path.read_text())
    table = {}
    for stage, body in lock.get("stages", {}).items():
        for out in body.get("outs", []):
            table[f"{stage}: {out['path']}"] = out.get("md5") or out.get("hash")
    return table


def metric_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flat(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], obj


def same(lock_a, metrics_a, lock_b, metrics_b) -> list[str]:
    broken = []
    a, b = outs(lock_a), outs(lock_b)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            broken.append(f"determinism: {key} differs between two clean runs ({a.get(key)} vs {b.get(key)})")
    ma, mb = metric_files(metrics_a), metric_files(metrics_b)
    for name in sorted(set(ma) | set(mb)):
        if ma.get(name) != mb.get(name):
            broken.append(f"determinism: metrics/{name} differs between two clean runs")
    return broken


def committed(lock_c, metrics_c, lock, metrics) -> list[str]:
    broken = []
    c, n = outs(lock_c), outs(lock)
    for key in sorted(k for k in c if k.startswith(BIT_STABLE)):
        if c[key] != n.get(key):
            broken.append(f"bit-stable output {key} differs from the committed dvc.lock ({c[key]} vs {n.get(key)})")
    for path in sorted(metrics_c.glob("*.json")):
        new_path = metrics / path.name
        if not new_path.exists():
            broken.append(f"metrics/{path.name} was not produced")
            continue
        old, new = dict(flat(json.loads(path.read_text()))), dict(flat(json.loads(new_path.read_text())))
        for key, value in old.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf in EXACT_METRICS and new.get(key) != value:
                broken.append(f"metrics/{path.name} {key}: {new.get(key)} != committed {value}")
            elif (leaf.startswith("top") or leaf == "balanced_accuracy") and isinstance(value, (int, float)):
                if key not in new or abs(new[key] - value) > ACCURACY_TOLERANCE:
                    broken.append(f"metrics/{path.name} {key}: {new.get(key)} vs committed {value} "
                                  f"(tolerance {ACCURACY_TOLERANCE})")
    return broken


def main(argv: list[str]) -> int:
    mode, *paths = argv
    check = {"same": same, "committed": committed}[mode]
    broken = check(*map(Path, paths))
    for line in broken:
        print(f"PROMISE BROKEN: {line}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
