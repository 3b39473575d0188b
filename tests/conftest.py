"""Shared fixtures: the real sample datasets beside the repo and small real image sets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PETPROBE_SHARED", REPO.parent / "shared")).resolve()
DATASETS = SHARED / "datasets"
PETS = DATASETS / "oxford-iiit-pet"
PETIMAGES = DATASETS / "PetImages"


def pytest_configure(config):
    if not PETS.is_dir() or not PETIMAGES.is_dir():
        raise pytest.UsageError(f"the sample datasets are missing: expected {DATASETS} (set PETPROBE_SHARED)")


@pytest.fixture(scope="session")
def cat_dog_images() -> list[Path]:
    """Eight real, readable photos: four cats, four dogs."""
    return [PETIMAGES / "Cat" / f"{n}.jpg" for n in (1, 2, 3, 4)] + [PETIMAGES / "Dog" / f"{n}.jpg" for n in (1, 2, 3, 4)]


def photo_folder(dest: Path, per_class: int) -> Path:
    """An image-folder dataset of real photos: ``dest/{Cat,Dog}/{1..per_class}.jpg`` from the sample."""
    for label in ("Cat", "Dog"):
        (dest / label).mkdir(parents=True)
        for n in range(1, per_class + 1):
            shutil.copyfile(PETIMAGES / label / f"{n}.jpg", dest / label / f"{n}.jpg")
    return dest


def copy_repo(dest: Path) -> Path:
    """A fresh copy of the tracked (and untracked, non-ignored) repo files, as a new git+DVC repo."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def image_folder_repo(root: Path, per_class: int, params: str) -> Path:
    """A repo copy under ``root`` whose only dataset, ``tiny``, is a folder of real cat and dog photos.

    ``params``: the rest of its params.yaml (YAML text), after the dataset lines.
    """
    photos = photo_folder(root / "photos", per_class=per_class)
    repo = copy_repo(root / "repo")
    (repo / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n{params}")
    return repo


@pytest.fixture(scope="session")
def cat_dog_embeddings() -> dict:
    """Real efficientnet_lite0 embeddings (fp32) of 12 cat and 12 dog photos.

    ``train``: photos 1-8 of each class, ``val``: photos 9-12; each a dict of paths, labels, X.
    """
    import numpy as np
    import torch

    from petprobe.backbones import get_backbone
    from petprobe.device import resolve_precision
    from petprobe.embedding.embed import embed_images

    backbone = get_backbone("efficientnet_lite0")
    model = backbone.build()
    out = {}
    for split, numbers in (("train", range(1, 9)), ("val", range(9, 13))):
        paths = [str(PETIMAGES / c / f"{n}.jpg") for c in ("Cat", "Dog") for n in numbers]
        X = np.concatenate(list(embed_images(model, backbone.preprocessing, paths, batch_size=8, num_workers=0,
                                             device=torch.device("cpu"),
                                             precision=resolve_precision("fp32", torch.device("cpu")))))
        out[split] = {"paths": paths, "labels": np.array([p.split("/")[-2] for p in paths]), "X": X}
    return out


@pytest.fixture(scope="session")
def cat_dog_classifier(cat_dog_images):
    """(PixelClassifier, class names, the 8 photos as [0,1] tensors): efficientnet_lite0 + a logreg fit on them."""
    import numpy as np
    import torch

    from petprobe.backbones import get_backbone
    from petprobe.data.images import load_images
    from petprobe.heads.logreg import LogRegHead
    from petprobe.probing.classifier import pixel_classifier, pixel_transforms
    from petprobe.data.images import load_rgb

    backbone = get_backbone("efficientnet_lite0")
    net = backbone.build()
    images = load_images(cat_dog_images, pixel_transforms(backbone))
    with torch.no_grad():
        X = net(torch.stack([backbone.transforms()(load_rgb(p)) for p in cat_dog_images])).numpy()
    y = np.array(["Cat"] * 4 + ["Dog"] * 4)
    head = LogRegHead(cs=(0.1,)).fit(X, y)
    return pixel_classifier(backbone, head.to_module(), net=net), [str(c) for c in head.classes_], images


def make_quick(params: dict) -> dict:
    """Shrink the render stage's work for end-to-end tests: they check the pipeline, not the pictures."""
    params["render"].update(steps=4, image_size=64, pgd_steps=2, unbounded_steps=3, n_images=2,
                            transfer_per_class=4)
    return params
