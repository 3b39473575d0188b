"""download@<ds>: put the raw dataset, in its official layout, under data/raw/<ds>/.

Reads data.source, data.mirror, imagefolders. ``auto`` copies from the mirror when it holds the
dataset, else downloads the official archives (checksummed, resumable, safely unpacked). Writes
data/raw/<ds>/ and data/raw/<ds>/SOURCE.json (where it came from, counts, checksums).
"""

from __future__ import annotations

import sys
from pathlib import Path

from petprobe.artefacts import Artefacts
from petprobe.data.datasets import get_dataset
from petprobe.data.sources import choose_source, populate
from petprobe.errors import run_stage
from petprobe.outputs import atomic_dir
from petprobe.params import load_params


def main(ds: str) -> None:
    params = load_params(dataset=ds)
    artefacts = Artefacts(ds)
    spec = get_dataset(ds, params.imagefolders)
    # A relative mirror resolves against the repo root (stages run there) and is recorded as written.
    mirror = Path(params.data.mirror).expanduser()
    source = choose_source(spec, params.data.source, mirror)

    with atomic_dir(artefacts.raw) as tmp:
        record = populate(spec, source, mirror, tmp, artefacts.downloads)
        artefacts.write_source_record(tmp, record)
    print(f"download@{ds}: {record['files']} files ({record['bytes'] / 1e6:.1f} MB) from {source}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
