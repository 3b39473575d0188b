"""`petprobe predict` on real sample images, with a trained pipeline laid out as `dvc repro` leaves it."""

import json
import re
import shutil

import numpy as np
import pytest

import petprobe
from conftest import PETIMAGES, REPO
from petprobe.backbones import get_backbone
from petprobe.cli import main
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.torch_head import TorchHead
from petprobe.outputs import write_json

pytestmark = pytest.mark.unit

BROKEN = PETIMAGES / "Dog" / "11702.jpg"  # truncated JPEG shipped in the PetImages archive
EMPTY = PETIMAGES / "Cat" / "666.jpg"  # 0 bytes, also in the archive


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cat_dog_embeddings):
    """data/embeddings/catsdogs/meta.json + data/models/catsdogs/{head.pt,head.json,logreg.npz}."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("dvc.yaml", "params.yaml"):  # what marks a petprobe repository for find_root
        shutil.copy(REPO / name, root / name)
    backbone = get_backbone("efficientnet_lite0")
    write_json(root / "data/embeddings/catsdogs/meta.json", {
        "backbone": backbone.name, "weights": {"sha256": backbone.weights.sha256},
        "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": "fp32"})
    train = cat_dog_embeddings["train"]
    head = TorchHead(hidden=32, lr=3e-3, batch_size=4, max_epochs=20, random_state=0).fit(train["X"], train["labels"])
    head.save(root / "data/models/catsdogs/head.pt")
    LogRegHead(cs=(0.1,)).fit(train["X"], train["labels"]).save(root / "data/models/catsdogs/logreg.npz")
    return root, head


def run(capsys, *args):
    status = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_predicts_good_files_and_reports_each_bad_one(pipeline, capsys, monkeypatch, tmp_path):
    root, _ = pipeline
    monkeypatch.chdir(root)
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PETIMAGES / "Dog" / "2.jpg", folder / "dog.jpg")
    (folder / "notes.txt").write_text("not a photo, and not named like one: skipped in a folder")
    notes = tmp_path / "named.txt"
    notes.write_text("named explicitly: reported")

    cat = PETIMAGES / "Cat" / "1.jpg"
    status, out, err = run(capsys, cat, BROKEN, tmp_path / "missing.jpg", EMPTY, notes, folder,
                           "--dataset", "catsdogs", "--top-k", "2")
    assert status == 1
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(cat), str(folder / "dog.jpg")]
    assert lines[0].split(": ")[1].startswith("Cat ") and lines[1].split(": ")[1].startswith("Dog ")
    errors = [line for line in err.splitlines() if line.startswith("petprobe: error:")]
    # PIL names how many bytes of the cut JPEG it could not process: a figure of that file, not of petprobe.
    errors[0] = re.sub(r"\(\d+ bytes not processed\)", "(N bytes not processed)", errors[0])
    assert errors == [
        f"petprobe: error: {BROKEN}: corrupt or truncated image (image file is truncated (N bytes not processed))",
        f"petprobe: error: {tmp_path / 'missing.jpg'}: no such file",
        f"petprobe: error: {EMPTY}: empty file (0 bytes)",
        f"petprobe: error: {notes}: not an image (unrecognised format)",
    ]


def test_json_probabilities_match_the_head_on_pipeline_embeddings(pipeline, capsys, monkeypatch, cat_dog_embeddings):
    root, head = pipeline
    monkeypatch.chdir(root)
    val = cat_dog_embeddings["val"]
    status, out, _ = run(capsys, *val["paths"], "--dataset", "catsdogs", "--json", "--top-k", "5")
    assert status == 0
    results = json.loads(out)
    assert [r["path"] for r in results] == val["paths"]
    assert all(len(r["predictions"]) == 2 for r in results)  # top-k capped at the number of classes
    got = np.array([[{p["class"]: p["probability"] for p in r["predictions"]}[c] for c in head.classes_]
                    for r in results])
    # The same backbone, preprocessing and precision as the embeddings the head was trained on.
    assert np.allclose(got, head.predict_proba(val["X"]), atol=1e-4)


def test_logreg_model_and_missing_pipeline(pipeline, capsys, monkeypatch, tmp_path):
    root, _ = pipeline
    monkeypatch.chdir(root)
    status, out, _ = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs", "--model", "logreg")
    assert status == 0 and ": Dog " in out

    status, out, err = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "pets")
    assert status == 2 and out == ""
    assert "no trained pipeline for dataset 'pets'" in err and "dvc repro" in err and "(trained: catsdogs)" in err

    empty = tmp_path / "empty-repo"
    empty.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / name, empty / name)
    status, _, err = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs", "--repo", empty)
    assert status == 2 and "run `dvc repro` first (trained: none)" in err


def test_finds_the_repository_upward_or_from_repo(pipeline, capsys, monkeypatch, tmp_path):
    root, _ = pipeline
    inside = root / "data" / "models"
    monkeypatch.chdir(inside)  # below the repository root: found upward
    status, out, _ = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs", "--top-k", "1")
    assert status == 0 and ": Dog " in out

    monkeypatch.chdir(tmp_path)  # outside any repository: one line, unless --repo names it
    status, out, err = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs")
    assert status == 2 and out == "" and err.startswith("petprobe: error: no petprobe repository")
    status, out, _ = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs", "--repo", root)
    assert status == 0 and ": Dog " in out
    status, _, err = run(capsys, PETIMAGES / "Dog" / "3.jpg", "--dataset", "catsdogs", "--repo", inside)
    assert status == 2 and "--repo" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"petprobe {petprobe.__version__}"
