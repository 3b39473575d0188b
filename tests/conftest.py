"""Shared fixtures: real photos from petprobe's embedded sample, and the workspace sample where present.

Every test runs in a plain clone. ``DATASETS`` is a mirror folder (``data.mirror`` layout) made from
the embedded mini-sample (petprobe/data/sample_data: Oxford-IIIT Pet photos, CC BY-SA 4.0) plus the
known defects of the real archives, made here from its photos as the workspace sample imitates them
(an empty ``Cat/666.jpg``, a truncated ``Dog/11702.jpg``, ``Thumbs.db`` files, a CMYK, a grayscale, a
BMP and a GIF named ``.jpg``; pets' unlisted GIF ``Abyssinian_34.jpg`` and PNG ``Abyssinian_5.jpg``).
``PETS`` and ``PETIMAGES`` are its two datasets: ``PETIMAGES/{Cat,Dog}/<n>.jpg`` numbered from 1.

Checks that need the workspace sample itself (``../shared/datasets`` or ``$PETPROBE_SHARED/datasets``:
its size, its accuracy floors) carry ``@pytest.mark.workspace`` and read ``WORKSPACE_*``; without it
they skip with one line naming what is missing. ``python -m pytest -m workspace`` runs only them.

Every test carries exactly one tier, ``unit``, ``integration`` or ``e2e`` (see pyproject.toml's
markers); the collection fails on a test with none or two.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petprobe.checksums import tree_digest
from petprobe.data.sample import SAMPLE_DIR, sample_mirror
from repo_copy import copy_repo  # noqa: F401  (the tests import it from here)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PETPROBE_SHARED", REPO.parent / "shared")).resolve()
WORKSPACE_DATASETS = SHARED / "datasets"
WORKSPACE_PETS = WORKSPACE_DATASETS / "oxford-iiit-pet"
WORKSPACE_PETIMAGES = WORKSPACE_DATASETS / "PetImages"
HAS_WORKSPACE = WORKSPACE_PETS.is_dir() and WORKSPACE_PETIMAGES.is_dir()
WORKSPACE_MISSING = f"needs the workspace sample, missing here: {WORKSPACE_DATASETS} (set PETPROBE_SHARED)"


def _add_archive_defects(root: Path) -> None:
    """The real archives' known defects, made from the sample's own photos (PIL re-encodes, byte cuts)."""
    cat, dog, pets = root / "PetImages" / "Cat", root / "PetImages" / "Dog", root / "oxford-iiit-pet" / "images"
    rng = np.random.default_rng(0)
    (cat / "666.jpg").write_bytes(b"")
    truncated = (dog / "2.jpg").read_bytes()
    (dog / "11702.jpg").write_bytes(truncated[: len(truncated) * 2 // 5])
    for folder in (cat, dog):
        (folder / "Thumbs.db").write_bytes(rng.bytes(6144))
    with Image.open(cat / "3.jpg") as photo:
        photo.convert("P").save(cat / "9998.jpg", format="GIF")
        photo.convert("CMYK").save(cat / "10125.jpg", format="JPEG", quality=90)
    with Image.open(dog / "3.jpg") as photo:
        photo.save(dog / "9999.jpg", format="BMP")
        photo.convert("L").save(dog / "10158.jpg", format="JPEG", quality=90)
    with Image.open(pets / "Abyssinian_20.jpg") as photo:
        photo.convert("P").save(pets / "Abyssinian_34.jpg", format="GIF")  # in no official list
        photo.convert("RGBA").save(pets / "Abyssinian_5.jpg", format="PNG")


def _test_mirror() -> Path:
    """The sample mirror plus the archives' defects, made once per sample version, atomically."""
    _, _, digest = tree_digest(SAMPLE_DIR)
    digest = hashlib.sha256((digest + inspect.getsource(_add_archive_defects)).encode()).hexdigest()
    root = Path(tempfile.gettempdir())
    final = root / f"petprobe-test-datasets-{digest[:16]}"
    if not final.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".petprobe-test-datasets-", dir=root))
        for name in ("oxford-iiit-pet", "PetImages"):
            shutil.copytree(sample_mirror() / name, tmp / name)
        _add_archive_defects(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another test session made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return final


DATASETS = _test_mirror()
PETS = DATASETS / "oxford-iiit-pet"
PETIMAGES = DATASETS / "PetImages"


# The test tiers (registered in pyproject.toml): each test carries exactly one, so `-m unit` is
# a complete, quick selection and no new test can fall outside every tier.
TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: every collected test is checked
def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(f"every test needs exactly one tier mark ({', '.join(TIERS)}; a module's "
                                "pytestmark or the test's own):\n  " + "\n  ".join(wrong))
    if not HAS_WORKSPACE:
        skip = pytest.mark.skip(reason=WORKSPACE_MISSING)
        for item in items:
            if "workspace" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cat_dog_images() -> list[Path]:
    """Eight real, readable photos: four cats, four dogs."""
    return [PETIMAGES / "Cat" / f"{n}.jpg" for n in (1, 2, 3, 4)] + [PETIMAGES / "Dog" / f"{n}.jpg" for n in (1, 2, 3, 4)]


def photo_folder(dest: Path, per_class: int) -> Path:
    """An image-folder dataset of real photos: ``dest/{Cat,Dog}/{1..per_class}.jpg`` from the sample (up to 64)."""
    for label in ("Cat", "Dog"):
        (dest / label).mkdir(parents=True)
        for n in range(1, per_class + 1):
            shutil.copyfile(PETIMAGES / label / f"{n}.jpg", dest / label / f"{n}.jpg")
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


def trained_logreg_repository(root: Path, ds: str, embeddings: dict) -> Path:
    """A repository folder as `petprobe predict` reads it: efficientnet_lite0's embeddings meta.json
    and a logistic head fit on ``embeddings["train"]`` (real photos), for dataset ``ds``."""
    from petprobe.backbones import get_backbone
    from petprobe.heads.logreg import LogRegHead
    from petprobe.outputs import write_json

    backbone = get_backbone("efficientnet_lite0")
    write_json(root / f"data/embeddings/{ds}/meta.json", {
        "backbone": backbone.name, "weights": {"sha256": backbone.weights.sha256},
        "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": "fp32"})
    train = embeddings["train"]
    LogRegHead(cs=(0.1,)).fit(train["X"], train["labels"]).save(root / f"data/models/{ds}/logreg.npz")
    return root


@pytest.fixture(scope="session")
def cat_dog_classifier(cat_dog_images):
    """(PixelClassifier, class names, the 8 photos as [0,1] tensors): efficientnet_lite0 + a logreg fit on them."""
    import numpy as np
    import torch

    from petprobe.backbones import get_backbone
    from petprobe.data.images import load_images, load_rgb
    from petprobe.heads.logreg import LogRegHead
    from petprobe.probing.classifier import pixel_classifier, pixel_transforms

    backbone = get_backbone("efficientnet_lite0")
    net = backbone.build()
    images = load_images(cat_dog_images, pixel_transforms(backbone))
    with torch.no_grad():
        X = net(torch.stack([backbone.transforms()(load_rgb(p)) for p in cat_dog_images])).numpy()
    y = np.array(["Cat"] * 4 + ["Dog"] * 4)
    head = LogRegHead(cs=(0.1,)).fit(X, y)
    return pixel_classifier(backbone, head.to_module(), net=net), [str(c) for c in head.classes_], images


def tiny_experiment_repo(tmp_path: Path, **updates: dict) -> Path:
    """A copy of the repo, committed (DVC experiments need a commit), whose one dataset is ``tiny``:
    8 real cats and 8 real dogs as an image folder, quick render/explain params, and ``updates``
    merged into params.yaml's sections (``head={"max_epochs": 5}``)."""

    import yaml

    folder = photo_folder(tmp_path / "tiny", per_class=8)
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(datasets=["tiny"], imagefolders={"tiny": str(folder)})
    params["embed"]["num_workers"] = 0
    for section, values in updates.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(make_quick(params), sort_keys=False))
    git_commit(repo, "tiny", init=True)
    return repo


def git_commit(repo: Path, message: str, *, init: bool = False) -> None:
    """Commit everything in ``repo`` (a git identity of the tests' own, whatever the machine has)."""
    import subprocess

    git = ["git", "-c", "user.name=petprobe", "-c", "user.email=petprobe@example.invalid"]
    for args in ((["init", "-q"],) if init else ()) + (["add", "-A"], ["commit", "-qm", message]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)


def run_in(repo: Path, *args: str, env: dict | None = None, timeout: int = 900) -> str:
    """Run a command (dvc, petprobe, ...) in ``repo`` with DVC's analytics off and a site cache
    beside it; its stdout and stderr, or a failed assertion showing their end."""
    import subprocess

    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(repo.parent / "site-cache"), **(env or {})}
    done = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


def make_quick(params: dict) -> dict:
    """Shrink the render and explain stages' work for end-to-end tests: they check the pipeline, not the
    pictures or the attributions (those are measured against references in their own tests)."""
    params["render"].update(steps=4, image_size=64, pgd_steps=2, unbounded_steps=3, n_images=2,
                            transfer_per_class=4)
    params["explain"].update(ig_steps=4, n_images=4, faithfulness_images=2, sanity_images=2, curve_steps=4)
    return params
