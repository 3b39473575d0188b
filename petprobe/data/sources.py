"""Where a dataset's raw files come from: the official archives, a local mirror, the embedded sample,
or the user's own folder.

``choose_source`` resolves ``data.source`` for one dataset (checked before anything is written);
``populate`` fills an empty folder with the dataset in its official layout and returns what
SOURCE.json records: where the files came from, the archives' checksums, a digest of the tree,
and the files a copy left out (``skipped``: links, FIFOs, names that are not UTF-8), which
prepare lists in rejected.csv.
"""

from __future__ import annotations

from pathlib import Path

from petprobe.artefacts import DOWNLOADS
from petprobe.checksums import tree_digest
from petprobe.data.archives import fetch_archive
from petprobe.data.datasets import DatasetSpec
from petprobe.data.mirror import copy_tree
from petprobe.data.sample import SAMPLE_LAYOUTS, write_sample
from petprobe.data.unpack import extract
from petprobe.errors import PetprobeError

__all__ = ["choose_source", "populate"]


def choose_source(spec: DatasetSpec, source: str, mirror: Path) -> str:
    """'mirror', 'official' or 'sample' for this dataset ('folder' for an image folder), or a clear error.

    'sample' (petprobe's embedded mini-sample) is only ever chosen explicitly: 'auto' means the
    mirror or the official download, never a toy sample in their place.
    """
    if spec.local_path is not None:
        if not Path(spec.local_path).expanduser().is_dir():  # checked before anything is written
            raise PetprobeError(f"imagefolders.{spec.name}: {spec.local_path} is not a folder")
        return "folder"
    if source == "sample" and spec.mirror_dir not in SAMPLE_LAYOUTS:
        raise PetprobeError(f"data.source is 'sample' but the embedded sample has no '{spec.name}' dataset")
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
    skipped: list[dict] = []
    if source == "folder":
        folder = Path(spec.local_path).expanduser()
        if not folder.is_dir():
            raise PetprobeError(f"imagefolders.{spec.name}: {folder} is not a folder")
        record["location"] = spec.local_path
        _, skipped = copy_tree(folder, target)
    elif source == "sample":
        record["location"] = "petprobe embedded sample (petprobe/data/sample_data; CC BY-SA 4.0, see its LICENSE.md)"
        write_sample(spec.mirror_dir, target / spec.raw_subdir)
    elif source == "mirror":
        record["location"] = str(mirror / spec.mirror_dir)
        _, skipped = copy_tree(mirror / spec.mirror_dir, target / spec.raw_subdir)
        # Relative to the raw folder, as prepare lists files.
        skipped = [{**row, "path": f"{spec.raw_subdir}/{row['path']}".lstrip("/")} for row in skipped]
    else:
        record["archives"] = []
        for archive in spec.archives:
            got, url = fetch_archive(archive, downloads)
            extract(got.path, target, skipped=skipped)
            record["archives"].append({"url": url, "file": archive.filename, "bytes": got.bytes,
                                       "md5": got.md5, "md5_published": archive.md5, "sha256": got.sha256,
                                       "bytes_pinned": archive.size, "sha256_pinned": archive.sha256})
    files, size, digest = tree_digest(target)
    if files == 0:
        raise PetprobeError(f"{spec.name}: the {source} source gave no files")
    record.update(files=files, bytes=size, tree_sha256=digest)
    if skipped:  # only then, so a clean copy's SOURCE.json (and its DVC hash) is as before
        record["skipped"] = skipped
    return record
