"""Where a report's numbers come from: the commit, the backbone and its weights, the data, the versions.

Read from the files the pipeline already writes (SOURCE.json, manifest.csv, rejected.csv,
embeddings' meta.json) and from git; a file that is missing (a partial run, a test project)
reads as None, and the page says "not recorded".
"""

from __future__ import annotations

import csv
import json
import subprocess
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from petprobe.artefacts import Artefacts

__all__ = ["git_state", "dataset_provenance", "versions", "run_date"]


def git_state(root: Path) -> dict | None:
    """The commit checked out at ``root`` and the files that differ from it (None outside git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"commit": commit.stdout.strip(), "dirty": bool(changed), "changed": changed}


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> list[dict] | None:
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return None


def dataset_provenance(ds: str, root: Path) -> dict:
    """Data source, image counts per split, rejected files and the backbone of dataset ``ds``."""
    art = Artefacts(ds, root)
    source = _json(art.raw / "SOURCE.json") or {}
    manifest = _rows(art.manifest_csv)
    rejected = _rows(art.rejected_csv)
    meta = _json(art.embeddings_meta) or {}
    return {
        "title": source.get("title"),
        "source": source.get("source"),
        "location": source.get("location") or source.get("url"),
        "raw_files": source.get("files"),
        "images": dict(sorted(Counter(r["split"] for r in manifest).items())) if manifest is not None else None,
        "n_classes": len({r["label"] for r in manifest}) if manifest is not None else None,
        "rejected": len(rejected) if rejected is not None else None,
        "rejected_reasons": dict(Counter(r["reason"] for r in rejected).most_common()) if rejected else {},
        "backbone": meta.get("backbone"),
        "weights_sha256": (meta.get("weights") or {}).get("sha256"),
        "weights_source": (meta.get("weights") or {}).get("source"),
        "precision": meta.get("precision"),
        "device": meta.get("device"),
    }


def versions() -> dict[str, str]:
    """petprobe's, torch's and DVC's installed versions."""
    out = {}
    for name in ("petprobe", "torch", "dvc"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_date() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
