"""Loading artefacts that were truncated, edited or tampered with: a clear one-line error every
time, and never code execution (each malicious payload would create a marker file if it ran; each
test first proves that the payload is live by running it through an unsafe loader on purpose).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from petprobe.artefacts import Artefacts
from petprobe.checksums import image_list_sha256
from petprobe.errors import PetprobeError
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.torch_head import load_state_dict
from petprobe.outputs import save_npy

# torch notes that a plain pickle uses a newer protocol before it refuses the file; expected here.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")]


class Payload:
    """Unpickling this calls open(marker, 'w'): a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "CODE-RAN"


def assert_live(load, marker: Path) -> None:
    """The payload really runs when unpickled (so 'no marker' below means 'refused', not 'inert')."""
    load()
    assert marker.exists()
    marker.unlink()


def one_line_error(call, match: str) -> str:
    with pytest.raises(PetprobeError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- logistic-regression head (.npz, allow_pickle=False) ----------------------------------------------


@pytest.fixture(scope="module")
def head_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)) + np.repeat(np.eye(3, 8) * 3, 20, axis=0)
    y = np.repeat(["Abyssinian", "beagle", "pug"], 20)
    path = tmp_path_factory.mktemp("head") / "logreg.npz"
    LogRegHead(cs=(0.1, 1.0)).fit(X, y, X[::3], y[::3]).save(path)
    return path


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_saved_head_round_trips(head_file):
    head = LogRegHead.load(head_file)
    X = np.random.default_rng(1).normal(size=(5, 8))
    assert head.predict_proba(X).shape == (5, 3) and list(head.classes_) == ["Abyssinian", "beagle", "pug"]


def test_npz_with_a_pickled_object_array_is_refused_without_running_it(head_file, tmp_path, marker):
    arrays = arrays_of(head_file)
    arrays["coef"] = np.array([Payload(marker)], dtype=object)
    evil = write_npz(tmp_path / "evil.npz", **arrays)
    assert_live(lambda: np.load(evil, allow_pickle=True)["coef"], marker)
    one_line_error(lambda: LogRegHead.load(evil), "not a valid logistic-regression file .*Object arrays cannot be loaded")
    assert not marker.exists()


def test_npz_member_replaced_by_a_raw_pickle_is_refused_without_running_it(head_file, tmp_path, marker):
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(head_file) as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            data = pickle.dumps(Payload(marker)) if name == "classes.npy" else src.read(name)
            dst.writestr(name, data)
    assert_live(lambda: pickle.loads(zipfile.ZipFile(evil).read("classes.npy")), marker)
    one_line_error(lambda: LogRegHead.load(evil), "array 'classes' has the wrong type or shape")
    assert not marker.exists()


def test_pickle_file_named_npz_is_refused_without_running_it(tmp_path, marker):
    evil = tmp_path / "logreg.npz"
    evil.write_bytes(pickle.dumps({"coef": Payload(marker)}))
    assert_live(lambda: np.load(evil, allow_pickle=True), marker)
    one_line_error(lambda: LogRegHead.load(evil), "not a valid logistic-regression file")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing key", "transposed coef", "nan coef",
                                    "single npy", "float classes", "missing file"])
def test_damaged_head_file_is_a_clear_error(head_file, tmp_path, damage):
    path = tmp_path / "logreg.npz"
    arrays = arrays_of(head_file)
    if damage == "truncated":
        path.write_bytes(head_file.read_bytes()[: head_file.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing key":
        write_npz(path, **{k: v for k, v in arrays.items() if k != "scaler_scale"})
    elif damage == "transposed coef":
        write_npz(path, **{**arrays, "coef": arrays["coef"].T.copy()})
    elif damage == "nan coef":
        coef = arrays["coef"].copy()
        coef[0, 0] = np.nan
        write_npz(path, **{**arrays, "coef": coef})
    elif damage == "single npy":
        np.save(path, arrays["coef"])  # np.save appends .npy only to names without a suffix
    elif damage == "float classes":
        write_npz(path, **{**arrays, "classes": np.arange(3.0)})
    message = one_line_error(lambda: LogRegHead.load(path), "rerun train_logreg")
    assert str(path) in message


# --- torch state_dict (.pt, weights_only=True) --------------------------------------------------------


def test_state_dict_round_trips(tmp_path):
    layer = torch.nn.Linear(4, 3)
    torch.save(layer.state_dict(), tmp_path / "head.pt")
    state = load_state_dict(tmp_path / "head.pt")
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], layer.weight)


def test_pt_with_a_malicious_pickle_is_refused_without_running_it(tmp_path, marker):
    evil = tmp_path / "head.pt"
    torch.save({"weight": torch.zeros(3, 4), "bias": Payload(marker)}, evil)
    assert_live(lambda: torch.load(evil, weights_only=False), marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)  # the protection itself, as torch documents it
    assert not marker.exists()
    message = one_line_error(lambda: load_state_dict(evil), "pickled objects other than tensors and was refused")
    assert "weights_only=False" not in message  # never advise the unsafe way out
    assert not marker.exists()


def test_plain_pickle_file_named_pt_is_refused_without_running_it(tmp_path, marker):
    evil = tmp_path / "head.pt"
    evil.write_bytes(pickle.dumps({"weight": Payload(marker)}))
    assert_live(lambda: pickle.loads(evil.read_bytes()), marker)
    one_line_error(lambda: load_state_dict(evil), "refused")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a dict", "non-tensor value", "missing file"])
def test_damaged_state_dict_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "head.pt"
    good = io.BytesIO()
    torch.save(torch.nn.Linear(4, 3).state_dict(), good)
    if damage == "truncated":
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a dict":
        torch.save([torch.zeros(2)], path)
    elif damage == "non-tensor value":
        torch.save({"weight": torch.zeros(2), "epochs": 7}, path)
    message = one_line_error(lambda: load_state_dict(path), "state_dict")
    assert str(path) in message


def test_torch_head_with_a_malicious_pickle_is_refused_without_running_it(tmp_path, marker):
    """Even when the attacker also rewrites head.json to match, TorchHead.load never unpickles objects."""
    import hashlib

    from petprobe.heads.torch_head import TorchHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32) + np.repeat(np.eye(2, 6) * 3, 20, axis=0)
    y = np.repeat(["Cat", "Dog"], 20)
    path = tmp_path / "head.pt"
    TorchHead(max_epochs=3, random_state=0).fit(X, y, X[::4], y[::4]).save(path)
    state = torch.load(path, weights_only=True)
    state["layers.1.bias"] = Payload(marker)
    torch.save(state, path)
    config = json.loads(path.with_suffix(".json").read_text())
    config["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(config))
    assert_live(lambda: torch.load(path, weights_only=False), marker)
    message = one_line_error(lambda: TorchHead.load(path), "refused")
    assert "weights_only=False" not in message
    assert not marker.exists()


# --- cached embeddings (.npy + meta.json checked against the manifest) --------------------------------


@pytest.fixture
def embedded(tmp_path):
    """A manifest of 12 real-looking rows and matching embeddings for its three splits."""
    manifest = pd.DataFrame({
        "path": [f"data/raw/pets/images/pug_{i}.jpg" for i in range(12)],
        "label": ["pug", "beagle"] * 6,
        "split": ["train"] * 6 + ["val"] * 3 + ["test"] * 3,
    })
    out = Artefacts("pets", tmp_path).embeddings
    meta = {"backbone": "efficientnet_lite0", "dim": 16, "splits": {}}
    for split in ("train", "val", "test"):
        rows = manifest[manifest.split == split]
        save_npy(out / f"{split}.npy", np.random.default_rng(0).normal(size=(len(rows), 16)).astype(np.float32))
        meta["splits"][split] = {"n": len(rows), "image_list_sha256": image_list_sha256(rows.path, rows.label)}
    (out / "meta.json").write_text(json.dumps(meta))
    return out, manifest


def test_matching_embeddings_load(embedded):
    out, manifest = embedded
    assert Artefacts("pets", out.parents[2]).read_split(manifest, "train").shape == (6, 16)


@pytest.mark.parametrize("damage, match", [
    ("npy cut mid-data", "unreadable or truncated"),
    ("npy cut mid-header", "unreadable or truncated"),
    ("npy empty", "unreadable or truncated"),
    ("npy missing", "unreadable or truncated"),
    ("npy float64", r"has shape \(6, 16\) float64, expected \(6, 16\) float32"),
    ("npy of another split", r"has shape \(3, 16\) float32, expected \(6, 16\) float32"),
    ("meta missing", "meta.json is missing; run the embed stage"),
    ("meta cut", "meta.json is not valid JSON"),
    ("meta without dim", "does not describe split 'train'"),
    ("meta is a list", "does not describe split 'train'"),
    ("meta without the split", "does not describe split 'train'"),
    ("manifest relabelled", "computed for another image list than the manifest"),
    ("manifest row dropped", "computed for another image list than the manifest"),
    ("manifest rows reordered", "computed for another image list than the manifest"),
])
def test_damaged_or_mismatched_embeddings_are_a_clear_error(embedded, damage, match):
    out, manifest = embedded
    npy, meta = out / "train.npy", out / "meta.json"
    data, info = npy.read_bytes(), json.loads(meta.read_text())
    if damage == "npy cut mid-data":
        npy.write_bytes(data[: len(data) - 100])
    elif damage == "npy cut mid-header":
        npy.write_bytes(data[:40])
    elif damage == "npy empty":
        npy.write_bytes(b"")
    elif damage == "npy missing":
        npy.unlink()
    elif damage == "npy float64":
        np.save(npy, np.load(npy).astype(np.float64))
    elif damage == "npy of another split":
        npy.write_bytes((out / "val.npy").read_bytes())
    elif damage == "meta missing":
        meta.unlink()
    elif damage == "meta cut":
        meta.write_text(meta.read_text()[:30])
    elif damage == "meta without dim":
        meta.write_text(json.dumps({k: v for k, v in info.items() if k != "dim"}))
    elif damage == "meta is a list":
        meta.write_text("[1, 2, 3]")
    elif damage == "meta without the split":
        meta.write_text(json.dumps({**info, "splits": {"test": info["splits"]["test"]}}))
    elif damage == "manifest relabelled":
        manifest.loc[0, "label"] = "beagle"
    elif damage == "manifest row dropped":
        manifest = manifest.drop(index=2)
    elif damage == "manifest rows reordered":
        manifest = pd.concat([manifest.iloc[[1, 0]], manifest.iloc[2:]])
    one_line_error(lambda: Artefacts("pets", out.parents[2]).read_split(manifest, "train"), match)


def test_embeddings_holding_a_pickle_are_refused_without_running_it(embedded, marker):
    out, manifest = embedded
    with open(out / "train.npy", "wb") as fh:
        np.save(fh, np.array([Payload(marker)] * 6, dtype=object), allow_pickle=True)
    assert_live(lambda: np.load(out / "train.npy", allow_pickle=True), marker)
    one_line_error(lambda: Artefacts("pets", out.parents[2]).read_split(manifest, "train"), "unreadable or truncated")
    assert not marker.exists()
