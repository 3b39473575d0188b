"""Classify new images with a trained pipeline: the backbone its embeddings came from, then a head.

``Predictor.for_dataset(ds, model)`` reads the embeddings' meta.json (``Artefacts``) to rebuild exactly the
backbone, preprocessing and precision the head was trained on (not whatever params.yaml names
now), and loads the head from data/models/<ds>/. ``Predictor.predict(paths)`` returns one
``Prediction`` per file, with an error message instead of classes for a file it cannot use, so
one bad file never stops the others. Used by ``petprobe predict``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from petprobe.artefacts import Artefacts
from petprobe.catalogue import DEFAULT
from petprobe.data.images import inspect_image
from petprobe.device import resolve_device, resolve_precision
from petprobe.embedding.embed import embed_images, embedding_backbone
from petprobe.errors import PetprobeError
from petprobe.heads.trained import load_head

__all__ = ["Prediction", "Predictor", "image_files"]


@dataclass(frozen=True)
class Prediction:
    """Classes with probabilities (most probable first) for one file, or why there are none."""

    path: str
    classes: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [{"class": c, "probability": round(p, 6)} for c, p in self.classes]}


def image_files(paths) -> list[str]:
    """The files named, plus the image files found (recursively, sorted) in the folders named.

    In folders, files with a non-image suffix and hidden files are passed over; a named file is
    always kept, so that a missing or broken one is reported rather than skipped.
    """
    suffixes = {s.lower() for s in Image.registered_extensions()}
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(str(path))
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        files += [str(p) for p in found] or [str(path)]  # an empty folder is reported, not dropped
    return files


class Predictor:
    """A trained backbone + head pair, ready to classify image files."""

    def __init__(self, backbone, head, *, precision_name: str, batch_size: int = 16):
        self.backbone = backbone
        self.head = head
        self.batch_size = batch_size
        self.device = resolve_device()
        try:
            self.precision = resolve_precision(precision_name, self.device)
        except PetprobeError:  # e.g. embedded in fp16 on a GPU, predicting on a CPU
            self.precision = resolve_precision("auto", self.device)

    @functools.cached_property
    def model(self):
        """The backbone, built when the first usable file is embedded: refusing files costs no model."""
        return self.backbone.build()

    @classmethod
    def for_dataset(cls, ds: str, model: str = DEFAULT, *, root: str | Path = ".") -> Predictor:
        artefacts = Artefacts(ds, Path(root))
        if not artefacts.embeddings_meta.is_file():
            trained = Artefacts.trained(Path(root))
            raise PetprobeError(f"no trained pipeline for dataset '{ds}' ({artefacts.embeddings_meta} is missing); run "
                                f"`dvc repro` first (trained: {', '.join(trained) or 'none'})")
        backbone, meta = embedding_backbone(artefacts)
        head = load_head(artefacts, model)
        if head.n_features_in_ != backbone.dim:
            raise PetprobeError(f"the {model} of {ds} expects {head.n_features_in_}-d embeddings, {backbone.name} "
                                f"gives {backbone.dim}; rerun the pipeline (dvc repro)")
        return cls(backbone, head, precision_name=meta.get("precision", "auto"))

    def predict_proba(self, paths, *, progress: bool = True) -> np.ndarray:
        """Class probabilities ``(N, C)`` (columns: ``head.classes_``) of readable image files, in order."""
        paths = [str(p) for p in paths]
        if not paths:
            return np.zeros((0, len(self.head.classes_)))
        return self.head.predict_proba(self._embed(paths, progress=progress))

    def predict(self, paths, *, top_k: int = 3) -> list[Prediction]:
        """One Prediction per path, in order; unusable files get an error and no classes."""
        paths = [str(p) for p in paths]
        errors = {p: self._problem(p) for p in paths}
        usable = [p for p in paths if errors[p] is None]
        try:
            proba = self.predict_proba(usable)
        except PetprobeError:
            # A file that passed the check but fails to decode must not cost the others their
            # predictions: predict one file at a time, and report the ones that fail.
            blocks = []
            for path in usable:
                try:
                    blocks.append(self.predict_proba([path], progress=False))
                except PetprobeError as err:
                    errors[path] = str(err)
            usable = [p for p in usable if errors[p] is None]
            proba = np.concatenate(blocks) if blocks else np.zeros((0, len(self.head.classes_)))
        rows = dict(zip(usable, proba))
        results = []
        for path in paths:
            if errors[path] is not None:
                results.append(Prediction(path, error=errors[path]))
                continue
            order = np.argsort(-rows[path], kind="stable")[:top_k]
            results.append(Prediction(path, [(str(self.head.classes_[j]), float(rows[path][j])) for j in order]))
        return results

    def _embed(self, paths: list[str], *, progress: bool = True) -> np.ndarray:
        # The embed stage's own code path, so the head sees the embeddings it was trained on.
        return np.concatenate(list(embed_images(
            self.model, self.backbone.preprocessing, paths, batch_size=self.batch_size, num_workers=0,
            device=self.device, precision=self.precision, desc="predict", progress=progress)))

    @staticmethod
    def _problem(path: str) -> str | None:
        p = Path(path)
        if p.is_dir():
            return "folder holds no image files"
        if not p.exists() and not p.is_symlink():
            return "no such file"
        return inspect_image(p)
