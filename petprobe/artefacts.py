"""Every file a dataset's run puts on disk: where it lives, and how it is read, written and checked.

This module is the one owner of the layout (paths relative to the repository root)::

    data/downloads/                       official archives and partial downloads (kept for resume)
    data/raw/<ds>/ + SOURCE.json          the dataset in its official layout, and where it came from
    data/prepared/<ds>/manifest.csv       path,label,split,phash of every usable image
                      classes.json        class names in the dataset's order
                      rejected.csv        path,reason of every unusable file
    data/embeddings/<ds>/<split>.npy      float32 (N, dim), rows in manifest order
                        meta.json         backbone, weights sha256, preprocessing, precision, image lists
    data/models/<ds>/<model_file>          each saved head (catalogue; head.pt has head.json beside it)
    data/render/<ds>/*.png
    data/explain/<ds>/*.png               feature maps, attribution maps, sanity check, curves
    metrics/<ds>.json                     full test summary of every head
    metrics/<ds>/headline.json            the metrics table's row (copied from <head>/headline.json,
                                          render_headline.json, explain_headline.json, near_twins.json)
    metrics/<ds>/near_duplicates.csv      near-duplicate pairs across splits; .json: their counts
    metrics/<ds>/...                      per-stage tables, curves and figures (dvc plots)

Stages, ``petprobe predict`` and the benchmark go through ``Artefacts(ds)``; nothing else spells
a path. Readers check what they read and fail with one line that says which stage to rerun. The
model files' formats belong to their heads (``petprobe.heads``); this module only places them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from petprobe.catalogue import HEADS, TRAINED
from petprobe.checksums import image_list_sha256
from petprobe.errors import PetprobeError, one_line
from petprobe.names import check_dataset_name
from petprobe.outputs import atomic_dir, write_csv, write_json

__all__ = ["Artefacts", "SPLITS", "SOURCE_RECORD", "DOWNLOADS", "DOWNLOAD_PINS", "DVC_CACHE", "read_npy_header", "read_checked_npz"]

SPLITS = ("train", "val", "test")
# download's record of where the raw files came from, written beside them: not a dataset file.
SOURCE_RECORD = "SOURCE.json"
DOWNLOADS = Path("data/downloads")
# In the downloads folder: size and sha256 of each archive that has no published checksum, as
# first downloaded (trust on first use); a later download that differs is refused.
DOWNLOAD_PINS = "pinned.json"
# DVC's cache of this repository: with `cache.type: symlink` the raw files are links into it.
DVC_CACHE = Path(".dvc") / "cache"
_RERUN_EMBED = "rerun the embed stage (dvc repro)"
_RERUN_PREPARE = "rerun the prepare stage (dvc repro)"
_PRECISIONS = ("fp32", "bf16", "fp16")
_PHASH = re.compile(r"[0-9a-f]{16}")


def _read_csv(path: Path, columns: tuple[str, ...], rerun: str) -> pd.DataFrame:
    """A CSV of strings with (at least) ``columns``, or one line saying what is wrong with it."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise PetprobeError(f"{path} is unreadable ({one_line(err)}); {rerun}") from None
    if missing := [c for c in columns if c not in frame.columns]:
        raise PetprobeError(f"{path} has no column {missing[0]!r} (expected {', '.join(columns)}); {rerun}")
    return frame


def read_npy_header(fh, size: int) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of the .npy data in ``fh`` (``size`` bytes long), checked to
    describe exactly the bytes that follow it; raises ValueError otherwise.

    Read before the array: numpy allocates what the header claims, so a tampered header claiming
    (10**9, 1280) would cost terabytes (a MemoryError traceback) before any check of the contents.
    """
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")  # numpy's own words
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize  # exact integers: no overflow
    if expected != size - fh.tell():
        raise ValueError(f"its header claims shape {shape} {dtype} ({expected:,} bytes) but "
                         f"{size - fh.tell():,} bytes follow")
    return tuple(shape), dtype


def read_checked_npz(path: str | Path, arrays: dict[str, tuple[int, str]]) -> dict[str, np.ndarray]:
    """The members ``arrays`` names (name -> (ndim, allowed dtype kinds)) of the .npz at ``path``, each checked.

    No pickle, and every header is read before its array (``read_npy_header``), so a tampered file
    is a ValueError naming what is wrong, never code run or terabytes allocated. The heads' own
    ``load`` turns it into one line saying which stage to rerun.
    """
    import zipfile

    try:
        if not zipfile.is_zipfile(path):  # np.load would read (and allocate) a bare .npy at once
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as f:
            for key in arrays:
                info = f.zip.getinfo(f"{key}.npy")
                if info.compress_type != zipfile.ZIP_STORED:  # np.savez stores; sizes then are real
                    raise ValueError(f"member {key}.npy is compressed, as save never writes it")
                with f.zip.open(info) as member:
                    if member.read(6) != b"\x93NUMPY":
                        continue  # numpy hands back the raw bytes, refused by the type check below
                with f.zip.open(info) as member:
                    read_npy_header(member, info.file_size)
            read = {key: f[key] for key in arrays}
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(one_line(err)) from None
    bad = [k for k, a in read.items() if not isinstance(a, np.ndarray)
           or a.dtype.kind not in arrays[k][1] or a.ndim != arrays[k][0]]
    if bad:  # e.g. a member that is not .npy data: numpy hands back its raw bytes
        raise ValueError(f"array '{bad[0]}' has the wrong type or shape")
    return read


@dataclass(frozen=True)
class Artefacts:
    """The artefacts of dataset ``ds`` in the repository at ``root``."""

    ds: str
    root: Path = Path(".")

    def __post_init__(self):
        check_dataset_name(self.ds)  # every path below is built from it: no '..', '/', or absolute name

    # --- where ---------------------------------------------------------------------------------

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw" / self.ds

    @property
    def downloads(self) -> Path:
        return self.root / DOWNLOADS

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared" / self.ds

    @property
    def manifest_csv(self) -> Path:
        return self.prepared / "manifest.csv"

    @property
    def classes_json(self) -> Path:
        return self.prepared / "classes.json"

    @property
    def rejected_csv(self) -> Path:
        return self.prepared / "rejected.csv"

    @property
    def embeddings(self) -> Path:
        return self.root / "data" / "embeddings" / self.ds

    @property
    def embeddings_meta(self) -> Path:
        return self.embeddings / "meta.json"

    @property
    def models(self) -> Path:
        return self.root / "data" / "models" / self.ds

    def model(self, name: str) -> Path:
        """The file of trained head ``name`` (one of ``catalogue.TRAINED``)."""
        if name not in TRAINED:
            raise PetprobeError(f"unknown model '{name}' (valid: {', '.join(sorted(TRAINED))})")
        return self.models / HEADS[name].model_file

    def seed_models(self, name: str) -> Path:
        """Folder of head ``name``'s models trained with the further seeds (``seed<k>`` files), kept to measure the spread."""
        return self.model(name).parent / f"{name}_seeds"

    def reliability_png(self, name: str) -> Path:
        """Head ``name``'s reliability diagram on the test split, before and after temperature scaling."""
        return self.head_report(name) / "reliability.png"

    @property
    def render(self) -> Path:
        return self.root / "data" / "render" / self.ds

    @property
    def explain(self) -> Path:
        return self.root / "data" / "explain" / self.ds

    @property
    def explain_report(self) -> Path:
        """Everything explain measures, with intervals (a plain output; the table gets explain_headline)."""
        return self.metrics / "explain.json"

    @property
    def explain_headline(self) -> Path:
        """Two explain numbers for the metrics table."""
        return self.metrics / "explain_headline.json"

    def explain_curve(self, kind: str) -> Path:
        """Mean deletion or insertion curve of every ranking (a DVC plot)."""
        if kind not in ("deletion", "insertion"):
            raise ValueError(f"unknown curve {kind!r}")
        return self.metrics / f"explain_{kind}.json"

    def trimap(self, image_path: str | Path) -> Path | None:
        """The official trimap of a photo of this dataset (``annotations/trimaps/<stem>.png``), or None."""
        path = self.raw / "annotations" / "trimaps" / f"{Path(image_path).stem}.png"
        return path if path.is_file() else None

    @property
    def summary_json(self) -> Path:
        """The full test summary of every head (the report's table; ``dvc metrics show`` has ``dataset_headline``)."""
        return self.root / "metrics" / f"{self.ds}.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / self.ds

    @property
    def logreg_search(self) -> Path:
        return self.metrics / "logreg_search.json"

    @property
    def fewshot_report(self) -> Path:
        """Few-shot rows (probe x k x draw) and the protocol."""
        return self.metrics / "fewshot.json"

    @property
    def fewshot_curve(self) -> Path:
        """Mean and sd of test top-1 per k images per class (a DVC plot)."""
        return self.metrics / "fewshot_curve.json"

    @property
    def train_head_log(self) -> Path:
        return self.metrics / "train_head"

    def comparison(self, name: str) -> Path:
        """What an optional comparison stage (``finetune``, ``scratch``) wrote."""
        return self.metrics / f"{name}.json"

    @property
    def dataset_headline(self) -> Path:
        """The dataset's headline numbers in one flat row: the only file ``dvc metrics show`` lists."""
        return self.metrics / "headline.json"

    def head_headline(self, name: str) -> Path:
        """One head's headline numbers (copied into ``dataset_headline``)."""
        return self.metrics / name / "headline.json"

    def head_report(self, name: str) -> Path:
        """Folder of one head's evaluation tables and figures."""
        return self.metrics / name

    @property
    def samples_png(self) -> Path:
        return self.metrics / "samples.png"

    @property
    def near_duplicates_csv(self) -> Path:
        """Every pair of near-duplicate images across splits (the duplicates stage)."""
        return self.metrics / "near_duplicates.csv"

    @property
    def near_duplicates_report(self) -> Path:
        """Counts of those pairs: test and val images with a near-twin, pairs by measure, thresholds."""
        return self.metrics / "near_duplicates.json"

    @property
    def near_twins(self) -> Path:
        """Test images with a near-twin in train or val, for the metrics table."""
        return self.metrics / "near_twins.json"

    @property
    def render_report(self) -> Path:
        return self.metrics / "render.json"

    def write_render(self, pictures: dict, report: dict, eps_rows: list[dict], headline: dict) -> None:
        """What the render stage writes: its pictures (``{file name: PIL image}``, published together as
        PNG files), render.json, render_eps.json and render_headline.json."""
        with atomic_dir(self.render) as out:
            for name, picture in pictures.items():
                picture.save(out / name)
        write_json(self.render_report, report)
        write_json(self.render_eps, eps_rows)
        write_json(self.render_headline, headline)

    @property
    def render_eps(self) -> Path:
        return self.metrics / "render_eps.json"

    @property
    def render_headline(self) -> Path:
        """A few render numbers for the metrics table (the full report is render_report)."""
        return self.metrics / "render_headline.json"

    @staticmethod
    def report_page(root: Path = Path(".")) -> Path:
        """The offline HTML page of every dataset's results (the report stage)."""
        return root / "data" / "report" / "index.html"

    @staticmethod
    def study_dir(root: Path = Path(".")) -> Path:
        """`petprobe study`'s comparison (study.csv, study.md, two figures): the report shows it."""
        return root / "metrics" / "study"

    @staticmethod
    def find_root(start: Path | str = ".") -> Path:
        """The petprobe repository holding ``start``: the nearest folder, upward, with dvc.yaml and params.yaml."""
        here = Path(start).resolve()
        for folder in (here, *here.parents):
            if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
                return folder
        raise PetprobeError(f"no petprobe repository (a folder with dvc.yaml and params.yaml) at or above {here}; "
                            "run from inside the repository or pass --repo")

    @staticmethod
    def trained(root: Path = Path(".")) -> list[str]:
        """Datasets with a models folder under ``root``."""
        return sorted(p.name for p in (root / "data" / "models").glob("*") if p.is_dir())

    # --- raw -----------------------------------------------------------------------------------

    @staticmethod
    def raw_folder_of(path: str | Path) -> Path | None:
        """The ``data/raw/<ds>`` folder (relative to the working directory, the repository root) that
        ``path`` names a file under, or None for a path elsewhere (a file given to ``petprobe predict``).

        Lexical, before links or ``..`` are followed: ``data/raw/pets/../../x`` names a file under
        ``data/raw/pets``, and the image readers refuse it because it resolves outside that folder.
        """
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(os.getcwd())
            except ValueError:
                return None
        parts = p.parts
        if len(parts) >= 4 and parts[:2] == ("data", "raw") and parts[2] not in (".", ".."):
            return Path(*parts[:3])
        return None

    @staticmethod
    def dvc_cache() -> Path:
        """DVC's cache folder of the repository (the raw files may be links into it)."""
        return DVC_CACHE

    def require_raw(self) -> Path:
        if not self.raw.is_dir():
            raise PetprobeError(f"{self.raw} does not exist; run the download stage first (dvc repro download@{self.ds})")
        return self.raw

    @staticmethod
    def write_source_record(raw_dir: Path, record: dict) -> None:
        write_json(raw_dir / SOURCE_RECORD, record)

    def read_skipped(self) -> list[dict]:
        """The files download left out (``{path, reason}``, paths relative to the raw folder);
        [] for a SOURCE.json written before downloads recorded them."""
        path = self.raw / SOURCE_RECORD
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise PetprobeError(f"{path} is missing or unreadable ({one_line(err)}); rerun the download stage") from None
        skipped = record.get("skipped", []) if isinstance(record, dict) else None
        if not isinstance(skipped, list) or not all(
                isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("reason"), str)
                for row in skipped):
            raise PetprobeError(f"{path}: 'skipped' is not a list of {{path, reason}}; rerun the download stage")
        return skipped

    # --- prepared ------------------------------------------------------------------------------

    def write_prepared(self, manifest: pd.DataFrame, classes: list[str], rejected: list[dict]) -> None:
        """manifest.csv, classes.json and rejected.csv, published together."""
        with atomic_dir(self.prepared) as tmp:
            write_csv(tmp / self.manifest_csv.name, manifest)
            write_json(tmp / self.classes_json.name, classes)
            write_csv(tmp / self.rejected_csv.name, pd.DataFrame(rejected, columns=["path", "reason"]))

    def read_manifest(self) -> tuple[pd.DataFrame, list[str]]:
        """(manifest with columns path, label, split; class names), checked to fit each other."""
        for path in (self.manifest_csv, self.classes_json):
            if not path.is_file():
                raise PetprobeError(f"{path} is missing; run the prepare stage first")
        manifest = _read_csv(self.manifest_csv, ("path", "label", "split"), _RERUN_PREPARE)
        try:
            classes = json.loads(self.classes_json.read_text())
        except (OSError, ValueError) as err:
            raise PetprobeError(f"{self.classes_json} is unreadable ({one_line(err)}); {_RERUN_PREPARE}") from None
        if (not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes)
                or len(set(classes)) != len(classes)):
            raise PetprobeError(f"{self.classes_json} is not a list of distinct class names; {_RERUN_PREPARE}")
        if bad := sorted(set(manifest.split) - set(SPLITS)):
            raise PetprobeError(f"{self.manifest_csv} has split {bad[0]!r} (valid: {', '.join(SPLITS)}); "
                                f"{_RERUN_PREPARE}")
        if bad := sorted(set(manifest.label) - set(classes)):
            raise PetprobeError(f"{self.manifest_csv} has label {bad[0]!r}, not in {self.classes_json.name}; "
                                f"{_RERUN_PREPARE}")
        if (outside := self._path_outside_raw(manifest.path)) is not None:
            raise PetprobeError(f"{self.manifest_csv} lists {outside!r}, which is not a file under data/raw/{self.ds}/ "
                                f"(the only folder a manifest may name); {_RERUN_PREPARE}")
        return manifest, classes

    def read_phashes(self, manifest: pd.DataFrame) -> np.ndarray:
        """The 64-bit perceptual hash of every manifest row (uint64, manifest order), from its phash
        column: 16 hex digits (``data.phash.phash_hex``)."""
        if "phash" not in manifest.columns:
            raise PetprobeError(f"{self.manifest_csv} has no column 'phash' (prepare writes it since it checks "
                                f"for near-duplicates); {_RERUN_PREPARE}")
        if bad := [text for text in manifest.phash if not _PHASH.fullmatch(text)][:1]:
            raise PetprobeError(f"{self.manifest_csv}: phash {bad[0]!r} is not 16 hex digits; {_RERUN_PREPARE}")
        return np.array([int(text, 16) for text in manifest.phash], dtype=np.uint64)

    def _path_outside_raw(self, paths) -> str | None:
        """The first of ``paths`` that is not a plain relative path under this dataset's raw folder, or None.

        prepare writes every path as ``data/raw/<ds>/...``; a row naming ``/dev/zero``, ``/etc/shadow``
        or ``data/raw/<ds>/../..`` was not written by it. (Links inside the folder are checked where
        each file is read: ``data.images.open_image_file``.)
        """
        raw = ("data", "raw", self.ds)  # manifest paths are relative to the repository root
        for path in paths:
            parts = PurePosixPath(path).parts
            if (len(parts) <= len(raw) or parts[:len(raw)] != raw or ".." in parts or "\0" in path
                    or PurePosixPath(path).is_absolute()):
                return path[:200]
        return None

    def read_rejected(self) -> pd.DataFrame:
        return _read_csv(self.rejected_csv, ("path", "reason"), _RERUN_PREPARE)

    # --- embeddings ----------------------------------------------------------------------------

    def split_npy(self, split: str, folder: Path | None = None) -> Path:
        """``<split>.npy`` in the embeddings folder (or in ``folder``, the one being written)."""
        return (folder or self.embeddings) / f"{split}.npy"

    @staticmethod
    def write_embeddings_meta(folder: Path, meta: dict) -> None:
        write_json(folder / "meta.json", meta)

    def read_embeddings_meta(self) -> dict:
        """meta.json of the embeddings, checked to name a backbone, its weights and preprocessing."""
        meta = self._embeddings_meta_json()
        try:
            valid = (isinstance(meta["backbone"], str) and isinstance(meta["weights"]["sha256"], str)
                     and isinstance(meta["preprocessing"], dict) and meta.get("precision", "fp32") in _PRECISIONS)
        except (KeyError, TypeError):
            valid = False
        if not valid:
            raise PetprobeError(f"{self.embeddings_meta} does not name the backbone, weights, preprocessing and "
                                f"precision ({', '.join(_PRECISIONS)}); {_RERUN_EMBED}")
        return meta

    def _embeddings_meta_json(self):
        """meta.json parsed, unchecked (each reader checks the fields it needs)."""
        try:
            return json.loads(self.embeddings_meta.read_text())
        except OSError:
            raise PetprobeError(f"{self.embeddings_meta} is missing; run the embed stage") from None
        except ValueError as err:
            raise PetprobeError(f"{self.embeddings_meta} is not valid JSON ({one_line(err)}); {_RERUN_EMBED}") from None

    def read_split(self, manifest: pd.DataFrame, split: str) -> np.ndarray:
        """The embeddings of one split, verified against the manifest rows they claim to hold."""
        meta_path, npy, rerun = self.embeddings_meta, self.split_npy(split), _RERUN_EMBED
        meta = self._embeddings_meta_json()
        try:
            expected, dim = meta["splits"][split], int(meta["dim"])
            listed, n = str(expected["image_list_sha256"]), int(expected["n"])
        except (KeyError, TypeError, ValueError):
            raise PetprobeError(f"{meta_path} does not describe split '{split}' (dim, n, image_list_sha256); "
                                f"{rerun}") from None
        rows = manifest[manifest.split == split]
        if image_list_sha256(rows.path, rows.label) != listed or n != len(rows):
            raise PetprobeError(f"{npy} was computed for another image list than the manifest; {rerun}")
        try:  # the header first: its shape must be the manifest's before numpy allocates it
            with open(npy, "rb") as fh:
                shape, dtype = read_npy_header(fh, os.fstat(fh.fileno()).st_size)
        except (OSError, ValueError, EOFError) as err:  # EOFError: a file cut inside its header
            raise PetprobeError(f"{npy} is unreadable or truncated ({one_line(err)}); {rerun}") from None
        if shape != (len(rows), dim) or dtype != np.float32:
            raise PetprobeError(f"{npy} has shape {shape} {dtype}, expected ({len(rows)}, {dim}) float32; {rerun}")
        try:
            array = np.load(npy, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise PetprobeError(f"{npy} is unreadable or truncated ({one_line(err)}); {rerun}") from None
        if not isinstance(array, np.ndarray) or array.shape != (len(rows), dim) or array.dtype != np.float32:
            raise PetprobeError(f"{npy} has shape {getattr(array, 'shape', '?')} {getattr(array, 'dtype', '')}, "
                                f"expected ({len(rows)}, {dim}) float32; {rerun}")
        return array

    def read_embeddings(self, manifest: pd.DataFrame) -> np.ndarray:
        """The embeddings of every manifest row, in manifest order (each split verified by ``read_split``)."""
        splits = manifest.split.to_numpy()
        parts = {split: self.read_split(manifest, split) for split in SPLITS if (splits == split).any()}
        X = np.empty((len(manifest), next(iter(parts.values())).shape[1]), dtype=np.float32)
        for split, rows in parts.items():
            X[splits == split] = rows
        return X

    def read_training_data(self) -> tuple[dict, dict, list[str]]:
        """Embeddings and labels of the train and val splits, and the class names:
        ``({split: X}, {split: y}, classes)``."""
        manifest, classes = self.read_manifest()
        X = {split: self.read_split(manifest, split) for split in ("train", "val")}
        y = {split: manifest.label[manifest.split == split].to_numpy() for split in ("train", "val")}
        return X, y, classes

    # --- metrics -------------------------------------------------------------------------------

    def read_comparison(self, name: str) -> dict | None:
        """The test metrics a comparison stage wrote, or None when it is switched off."""
        path = self.comparison(name)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            raise PetprobeError(f"{path} is missing or unreadable; run its stage first (dvc repro)") from None
        if not isinstance(result, dict) or (result.get("enabled") and not isinstance(result.get("test"), dict)):
            raise PetprobeError(f"{path} is not a comparison stage's result; run its stage again (dvc repro)")
        return result["test"] if result.get("enabled") else None
