"""download@<ds>: put the raw dataset, in its official layout, under data/raw/<ds>/.

Reads data.source, data.mirror (and imagefolders). ``auto`` copies from the mirror when it holds
the dataset, else downloads the official archives (checksummed, resumable, safely unpacked).
Writes data/raw/<ds>/ and data/raw/<ds>/SOURCE.json (where it came from, counts, checksums).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from stages.archives import copy_tree, extract, fetch
from stages.datasets import SOURCE_RECORD, DatasetSpec, get_dataset
from stages.errors import PetprobeError, run_stage
from stages.outputs import atomic_dir, write_json
from stages.params import load_params

RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")  # archives and partial downloads, kept for resume; not a DVC out


def tree_digest(root: Path) -> tuple[int, int, str]:
    """(files, bytes, sha256 over every relative path and file content) of a folder."""
    digest, files, size = hashlib.sha256(), 0, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + b"\0")  # any name, even not UTF-8
        digest.update(hashlib.sha256(data).digest())
        files, size = files + 1, size + len(data)
    return files, size, digest.hexdigest()


def choose_source(spec: DatasetSpec, source: str, mirror: Path) -> str:
    """'mirror' or 'official' for this dataset, or a clear error."""
    if spec.local_path is not None:
        if not Path(spec.local_path).expanduser().is_dir():  # checked before anything is written
            raise PetprobeError(f"imagefolders.{spec.name}: {spec.local_path} is not a folder")
        return "folder"
    has_mirror = (mirror / spec.mirror_dir).is_dir()
    if source == "mirror" and not has_mirror:
        raise PetprobeError(f"data.source is 'mirror' but {mirror / spec.mirror_dir} does not exist "
                            f"(data.mirror must hold '{spec.mirror_dir}/' laid out like the extracted archives)")
    if source == "auto":
        return "mirror" if has_mirror else "official"
    return source


def populate(spec: DatasetSpec, source: str, mirror: Path, target: Path, downloads: Path = DOWNLOADS) -> dict:
    """Fill the empty folder ``target`` with the raw dataset; return SOURCE.json's fields.

    Archives (and partial downloads, for resume) are kept in ``downloads``, outside ``target``.
    """
    record: dict = {"dataset": spec.name, "title": spec.title, "source": source}
    if source == "folder":
        folder = Path(spec.local_path).expanduser()
        if not folder.is_dir():
            raise PetprobeError(f"imagefolders.{spec.name}: {folder} is not a folder")
        record["location"] = spec.local_path
        copy_tree(folder, target)
    elif source == "mirror":
        record["location"] = str(mirror / spec.mirror_dir)
        copy_tree(mirror / spec.mirror_dir, target / spec.raw_subdir)
    else:
        record["archives"] = []
        for archive in spec.archives:
            got = fetch(archive.url, downloads / archive.filename, md5=archive.md5)
            extract(got.path, target)
            record["archives"].append({"url": archive.url, "file": archive.filename, "bytes": got.bytes,
                                       "md5": got.md5, "md5_published": archive.md5, "sha256": got.sha256})
    files, size, digest = tree_digest(target)
    if files == 0:
        raise PetprobeError(f"{spec.name}: the {source} source gave no files")
    record.update(files=files, bytes=size, tree_sha256=digest)
    return record


def main(ds: str) -> None:
    params = load_params()
    params.check_dataset(ds)
    spec = get_dataset(ds, params.imagefolders)
    # A relative mirror resolves against the repo root (stages run there) and is recorded as written.
    mirror = Path(params.data.mirror).expanduser()
    source = choose_source(spec, params.data.source, mirror)

    with atomic_dir(RAW / ds) as tmp:
        record = populate(spec, source, mirror, tmp)
        write_json(tmp / SOURCE_RECORD, record)
    print(f"download@{ds}: {record['files']} files ({record['bytes'] / 1e6:.1f} MB) from {source}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
