"""Hostile names, images, folders and artefacts (issue 16): each ends in one ``petprobe: error:``
line or a rejected.csv row, and nothing outside the repository is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PETIMAGES, REPO, photo_folder
from petprobe.artefacts import Artefacts
from petprobe.data.images import inspect_image, load_rgb_tensor
from petprobe.errors import PetprobeError
from petprobe.outputs import atomic_dir, write_json
from petprobe.params import parse_params
from stages import download, prepare


def tree_state(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Runs argv[1:] and prints its peak RSS (KiB) on stderr. The measured process must be a child of
# this small wrapper: Linux carries the memory high-water mark of the process that forks into the
# child's ru_maxrss, so a child of a large pytest process would report pytest's size.
_PEAK_RSS = ("import resource, subprocess, sys\n"
             "code = subprocess.run(sys.argv[1:]).returncode\n"
             "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(code)\n")


def run_python(code: str, cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``code`` in a fresh interpreter; (its result, its peak RSS in KiB)."""
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS, sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("PEAK "), result.stderr[-2000:]
    result.stderr = "\n".join(lines[:-1])
    return result, int(lines[-1].split()[1])


# --- 1. names ----------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("name", [".", "..", "a/b", "/home/me/photos", "", "-x", "ünï", "a b", "x" * 65])
def test_hostile_dataset_names_are_refused_with_one_line(name):
    with pytest.raises(PetprobeError, match="is not a valid dataset name: use letters, digits, '_' and '-'"):
        parse_params({"datasets": [name], "imagefolders": {name: "/tmp"}})
    with pytest.raises(PetprobeError, match="is not a valid dataset name"):
        Artefacts(name)


@pytest.mark.integration
def test_download_of_an_absolute_dataset_name_leaves_the_outside_folder_untouched(tmp_path):
    """The reproduction: datasets: [pets, /…/photos] with imagefolders {/…/photos: /…/cats}."""
    photos, cats, work = tmp_path / "photos", tmp_path / "cats", tmp_path / "work"
    photo_folder(photos, per_class=1)
    photo_folder(cats, per_class=1)
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [pets, '{photos}']\nimagefolders: {{'{photos}': '{cats}'}}\n")
    before = tree_state(photos)
    result = subprocess.run([sys.executable, "-m", "stages.download", str(photos)], cwd=work, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"petprobe: error: params.yaml: 'imagefolders' key '{photos}' is not a valid")
    assert tree_state(photos) == before and not (work / "data").exists()


@pytest.mark.unit
def test_atomic_writer_replaces_only_inside_data_and_metrics(tmp_path, monkeypatch):
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "data").mkdir(parents=True)
    photo_folder(outside, per_class=1)
    before = tree_state(outside)
    monkeypatch.chdir(repo)
    for target in (outside, Path("data/raw/../../../outside"), Path("data/raw") / str(outside), Path("data")):
        with pytest.raises(PetprobeError, match="refusing to replace"):
            with atomic_dir(target) as tmp:
                (tmp / "x").write_text("new")
    with pytest.raises(PetprobeError, match="refusing to replace"):
        write_json(outside / "Cat" / "1.jpg", {})
    assert tree_state(outside) == before
    for _ in range(2):  # inside data/: created, then replaced
        with atomic_dir("data/raw/tiny") as tmp:
            (tmp / "x").write_text("new")
    assert (repo / "data/raw/tiny/x").read_text() == "new"


# --- 2. images that would exhaust memory ----------------------------------------------------


def strip_png(width: int, height: int) -> bytes:
    """A tiny PNG of a 1-pixel-wide gray strip (the issue's 196-byte 1x40000 case)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


@pytest.mark.unit
def test_strips_are_rejected_before_decoding(tmp_path):
    for (w, h), reason in {(1, 40000): "too large (1x40000 px; a side over 30,000 px)",
                           (1, 12000): "extreme aspect ratio (1x12000 px; the limit is 1:20)",
                           (30, 600): None}.items():
        path = tmp_path / f"{w}x{h}.png"
        path.write_bytes(strip_png(w, h))
        assert path.stat().st_size < 400
        assert inspect_image(path) == reason
        if reason:
            with pytest.raises(OSError, match=reason.split(" (")[0]):
                load_rgb_tensor(path)  # embed refuses it too, should it ever reach the manifest


@pytest.mark.integration
def test_embed_and_predict_with_a_strip_png_stay_under_2_gib(tmp_path):
    """download, prepare, embed, train_logreg and `petprobe predict` on a folder of real photos plus
    the 1x40000 and 1x12000 PNGs, in one subprocess whose peak RSS is measured."""
    photos = photo_folder(tmp_path / "photos", per_class=4)
    (photos / "Cat" / "strip40000.png").write_bytes(strip_png(1, 40000))
    (photos / "Dog" / "strip12000.png").write_bytes(strip_png(1, 12000))
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n"
                                      "embed: {num_workers: 0, precision: fp32}\nlogreg: {c_steps: 2}\n")
    (work / "dvc.yaml").write_text("stages: {}\n")  # `petprobe predict` looks for the repository upward
    result, peak_kib = run_python(f"""
        import sys
        from stages import download, prepare, embed, train_logreg
        from petprobe.cli import main
        for stage in (download, prepare, embed, train_logreg):
            stage.main("tiny")
        sys.exit(main(["predict", {str(photos)!r}, "--dataset", "tiny", "--model", "logreg", "--json"]))
    """, work)
    print(f"peak RSS of download+prepare+embed+train_logreg+predict: {peak_kib / 2**20:.2f} GiB")
    assert peak_kib < 2 * 2**20, peak_kib  # ru_maxrss is in KiB on Linux
    assert result.returncode == 1, result.stderr[-2000:]  # some files could not be classified ...
    predictions = {Path(r["path"]).relative_to(photos).as_posix(): r for r in json.loads(result.stdout)}
    assert predictions["Cat/strip40000.png"]["error"].startswith("too large")
    assert predictions["Dog/strip12000.png"]["error"].startswith("extreme aspect ratio")
    good = [r for name, r in predictions.items() if name.endswith(".jpg")]
    assert len(good) == 8 and all("predictions" in r for r in good)  # ... the others are predicted
    rejected = pd.read_csv(work / "data/prepared/tiny/rejected.csv")
    assert sorted(Path(p).name for p in rejected.path) == ["strip12000.png", "strip40000.png"]


# --- 4, 8. names, links and special files in an image folder ---------------------------------


@pytest.fixture
def hostile_folder(tmp_path) -> tuple[Path, Path]:
    """A folder of real photos with a non-UTF-8 name, a link to a file outside, a link loop, a FIFO
    and a link to a folder outside; and that outside folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes((PETIMAGES / "Cat" / "9.jpg").read_bytes())
    photos = photo_folder(tmp_path / "photos", per_class=3)
    shutil.copyfile(PETIMAGES / "Cat" / "4.jpg", os.fsencode(photos / "Cat") + b"/caf\xe9.jpg")
    (photos / "Cat" / "link.jpg").symlink_to(outside / "secret.jpg")
    (photos / "Dog" / "loop.jpg").symlink_to(photos / "Dog" / "loop.jpg")
    os.mkfifo(photos / "Dog" / "pipe.jpg")
    (photos / "Dog" / "elsewhere").symlink_to(outside)
    return photos, outside


EXPECTED_SKIPPED = {
    "Cat/caf\\xe9.jpg": "file name is not valid UTF-8; rename the file",
    "Cat/link.jpg": "symbolic link (not followed)",
    "Dog/elsewhere": "symbolic link to a folder (not followed)",
    "Dog/loop.jpg": "symbolic link (not followed)",
    "Dog/pipe.jpg": "not a regular file (FIFO, socket or device)",
}


@pytest.mark.unit
def test_links_fifos_and_non_utf8_names_are_not_copied_and_are_listed(hostile_folder, tmp_path, monkeypatch):
    photos, outside = hostile_folder
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n")
    monkeypatch.chdir(work)
    download.main("tiny")  # would wait forever on the FIFO if it read it
    prepare.main("tiny")
    raw = work / "data/raw/tiny"
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()) == [
        "Cat/1.jpg", "Cat/2.jpg", "Cat/3.jpg", "Dog/1.jpg", "Dog/2.jpg", "Dog/3.jpg", "SOURCE.json"]
    assert not any(p.is_symlink() for p in raw.rglob("*"))
    rejected = pd.read_csv(work / "data/prepared/tiny/rejected.csv", dtype=str, keep_default_na=False)
    assert dict(zip(rejected.path, rejected.reason)) == {f"data/raw/tiny/{k}": v for k, v in EXPECTED_SKIPPED.items()}


@pytest.mark.integration
def test_dvc_repro_succeeds_with_a_non_utf8_name_in_the_folder(hostile_folder, tmp_path):
    from conftest import copy_repo

    photos, _ = hostile_folder
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(datasets=["tiny"], imagefolders={"tiny": str(photos)})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    result = subprocess.run(["dvc", "repro", "prepare@tiny"], cwd=repo, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rejected = pd.read_csv(repo / "data/prepared/tiny/rejected.csv")
    assert "data/raw/tiny/Cat/caf\\xe9.jpg" in set(rejected.path)


# --- 5. too little data --------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("layout, message", [
    ({"Cat": 5}, "tiny: too little data to train and evaluate on: 1 class (Cat); a classifier needs at least 2"),
    ({"Cat": 1, "Dog": 1}, "class 'Cat' has 1 usable image(s) (train 1, val 0, test 0): none in val and test"),
    ({"Cat": 4, "Dog": 2}, "class 'Dog' has 2 usable image(s) (train 1, val 0, test 1): none in val"),
])
def test_too_little_data_is_one_line_naming_the_class_and_count(layout, message, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    for label, n in layout.items():
        (photos / label).mkdir(parents=True)
        for i in range(1, n + 1):
            shutil.copyfile(PETIMAGES / label / f"{i}.jpg", photos / label / f"{i}.jpg")
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text(f"datasets: [tiny]\nimagefolders: {{tiny: '{photos}'}}\n")
    monkeypatch.chdir(work)
    download.main("tiny")
    with pytest.raises(PetprobeError) as err:
        prepare.main("tiny")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (work / "data/prepared/tiny").exists()


# --- 6. foreign or tampered artefacts -----------------------------------------------------------


@pytest.fixture
def trained_repo(tmp_path, monkeypatch, cat_dog_embeddings):
    """A repo with catsdogs' prepared files, embeddings meta.json and a logreg, as dvc repro leaves them."""
    from petprobe.backbones import get_backbone
    from petprobe.heads.logreg import LogRegHead

    monkeypatch.chdir(tmp_path)
    artefacts = Artefacts("catsdogs")
    backbone = get_backbone("efficientnet_lite0")
    meta = {"backbone": backbone.name, "weights": {"sha256": backbone.weights.sha256},
            "preprocessing": backbone.preprocessing.as_dict(), "dim": backbone.dim, "precision": "fp32"}
    write_json(artefacts.embeddings_meta, meta)
    train = cat_dog_embeddings["train"]
    LogRegHead(cs=(0.1,)).fit(train["X"], train["labels"]).save(artefacts.model("logreg"))
    artefacts.write_prepared(pd.DataFrame({"path": train["paths"], "label": train["labels"], "split": "train"}),
                             ["Cat", "Dog"], [])
    return artefacts, meta


@pytest.mark.unit
@pytest.mark.parametrize("change, match", [
    ({"backbone": ["efficientnet_lite0"]}, "does not name the backbone, weights, preprocessing and precision"),
    ({"precision": "int8"}, "does not name the backbone, weights, preprocessing and precision"),
    ({"weights": "abc"}, "does not name the backbone"),
])
def test_tampered_meta_json_is_one_line(trained_repo, change, match):
    from petprobe.predict import Predictor

    artefacts, meta = trained_repo
    write_json(artefacts.embeddings_meta, {**meta, **change})
    with pytest.raises(PetprobeError, match=match):
        Predictor.for_dataset("catsdogs", "logreg")


@pytest.mark.unit
def test_torchvision_backbone_without_cached_weights_names_the_file(trained_repo, tmp_path, monkeypatch):
    from petprobe.backbones import get_backbone
    from petprobe.predict import Predictor

    artefacts, meta = trained_repo
    resnet = get_backbone("resnet18")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY"):  # a closed local port: offline, at once, whatever the network
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    write_json(artefacts.embeddings_meta, {**meta, "backbone": "resnet18", "dim": 512,
                                           "preprocessing": resnet.preprocessing.as_dict()})
    with pytest.raises(PetprobeError) as err:
        Predictor.for_dataset("catsdogs", "logreg")
    assert f"are not cached at {tmp_path}/torch/hub/checkpoints/resnet18-f37072fd.pth; pre-seed them" in str(err.value)


@pytest.mark.parametrize("manifest, classes, match", [
    ("a,b\n1,2\n", '["Cat", "Dog"]', "manifest.csv has no column 'path'"),
    ("", '["Cat", "Dog"]', "manifest.csv is unreadable"),
    ("path,label,split\nx.jpg,Cat,train\n", '{"Cat": 0}', "classes.json is not a list of distinct class names"),
    ("path,label,split\nx.jpg,Cat,train\n", '["Cat", "Cat"]', "classes.json is not a list of distinct class names"),
    ("path,label,split\nx.jpg,Cat,train\n", "[1, 2]", "classes.json is not a list of distinct class names"),
    ("path,label,split\nx.jpg,Cat,holdout\n", '["Cat"]', "manifest.csv has split 'holdout'"),
    ("path,label,split\nx.jpg,Fox,train\n", '["Cat"]', "manifest.csv has label 'Fox', not in classes.json"),
])
@pytest.mark.unit
def test_tampered_manifest_or_classes_is_one_line(tmp_path, monkeypatch, manifest, classes, match):
    monkeypatch.chdir(tmp_path)
    artefacts = Artefacts("tiny")
    artefacts.prepared.mkdir(parents=True)
    artefacts.manifest_csv.write_text(manifest)
    artefacts.classes_json.write_text(classes)
    with pytest.raises(PetprobeError, match=match):
        artefacts.read_manifest()


# --- 8. streaming digest ------------------------------------------------------------------------


@pytest.mark.integration
def test_tree_digest_streams_a_large_file(tmp_path):
    """SOURCE.json's digest of a folder with a 384 MiB file (sparse: no disk used) in flat memory."""
    (tmp_path / "big").mkdir()
    with open(tmp_path / "big" / "video.bin", "wb") as fh:
        fh.truncate(384 * 2**20)
    result, peak_kib = run_python(f"""
        from petprobe.checksums import tree_digest
        files, size, _ = tree_digest({str(tmp_path / "big")!r})
        print(files, size)
    """, tmp_path)
    files, size = map(int, result.stdout.split())
    assert (files, size) == (1, 384 * 2**20)
    assert peak_kib < 150 * 1024, peak_kib  # the whole file would be 384 MiB
