"""TorchHead on real embeddings: sklearn manners, determinism, early stopping, pickle-free files."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from petprobe.artefacts import Artefacts
from petprobe.errors import PetprobeError
from petprobe.heads.torch_head import TorchHead
from petprobe.heads.trained import load_head

SMALL = dict(hidden=32, dropout=0.2, lr=3e-3, batch_size=4, max_epochs=30, patience=5)


def fit(data, **params):
    train, val = data["train"], data["val"]
    return TorchHead(**{**SMALL, **params}).fit(train["X"], train["labels"], val["X"], val["labels"])


def state_bytes(head) -> bytes:
    return b"".join(v.numpy().tobytes() for v in head.module_.state_dict().values())


@pytest.mark.unit
def test_init_only_stores_params_and_fit_returns_self(cat_dog_embeddings):
    head = TorchHead(hidden=7, random_state=3)
    assert head.get_params()["hidden"] == 7 and not hasattr(head, "classes_")
    assert fit(cat_dog_embeddings, random_state=0).classes_.tolist() == ["Cat", "Dog"]


@pytest.mark.unit
def test_same_seed_gives_identical_weights_and_files(cat_dog_embeddings, tmp_path):
    a, b = fit(cat_dog_embeddings, random_state=0), fit(cat_dog_embeddings, random_state=0)
    assert state_bytes(a) == state_bytes(b)
    assert a.history_ == b.history_
    a.save(tmp_path / "a.pt")
    b.save(tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert state_bytes(fit(cat_dog_embeddings, random_state=1)) != state_bytes(a)


@pytest.mark.integration
def test_weights_do_not_depend_on_the_thread_setting(cat_dog_embeddings, tmp_path):
    """A fresh process with another torch thread count trains the same weights."""
    head = fit(cat_dog_embeddings, random_state=0)
    np.savez(tmp_path / "data.npz", **{f"{s}_{k}": cat_dog_embeddings[s][k] for s in ("train", "val")
                                       for k in ("X", "labels")})
    script = (
        "import sys, numpy as np, torch; torch.set_num_threads(int(sys.argv[2]))\n"
        "from petprobe.heads.torch_head import TorchHead\n"
        "d = np.load(sys.argv[1])\n"
        f"h = TorchHead(**{SMALL!r}, random_state=0).fit(d['train_X'], d['train_labels'], d['val_X'], d['val_labels'])\n"
        "h.save(sys.argv[3])\n"
    )
    threads = 3 if torch.get_num_threads() != 3 else 2
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "data.npz"), str(threads), str(tmp_path / "p.pt")],
                   cwd=REPO, check=True)
    head.save(tmp_path / "here.pt")
    assert (tmp_path / "p.pt").read_bytes() == (tmp_path / "here.pt").read_bytes()


@pytest.mark.unit
def test_early_stopping_keeps_the_best_epoch(cat_dog_embeddings):
    head = fit(cat_dog_embeddings, random_state=0, refit=False, patience=3, max_epochs=200)
    val_losses = [r["val_loss"] for r in head.history_]
    assert len(head.history_) == head.best_epoch_ + 3 < 200  # stopped 3 epochs after the best
    assert head.best_epoch_ == 1 + int(np.argmin(val_losses))
    val = cat_dog_embeddings["val"]
    proba = head.uncalibrated_proba(val["X"])  # the network's own logits, before temperature scaling
    targets = np.searchsorted(head.classes_, val["labels"])
    loss = -np.log(proba[np.arange(len(targets)), targets]).mean()
    assert loss == pytest.approx(min(val_losses), rel=1e-5)  # the kept weights are the best epoch's
    # The temperature is fitted on this val set with this network: its log-loss can only go down (T = 1 is a candidate).
    calibrated = head.predict_proba(val["X"])
    assert -np.log(calibrated[np.arange(len(targets)), targets]).mean() <= loss + 1e-9


@pytest.mark.unit
def test_predictions_follow_classes_and_to_module(cat_dog_embeddings):
    head = fit(cat_dog_embeddings, random_state=0)
    X = cat_dog_embeddings["val"]["X"]
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (head.predict(X) == head.classes_[proba.argmax(axis=1)]).all()
    assert (head.predict(X) == cat_dog_embeddings["val"]["labels"]).mean() >= 0.75  # real features separate them
    module = head.to_module()
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    logits = module(torch.from_numpy(X))
    assert np.allclose(torch.softmax(logits, 1).numpy(), proba, atol=1e-6)


@pytest.mark.unit
def test_save_load_round_trip(cat_dog_embeddings, tmp_path):
    head = fit(cat_dog_embeddings, random_state=0)
    artefacts = Artefacts("catsdogs", tmp_path)
    head.save(artefacts.model("head"))
    config = json.loads(artefacts.model("head").with_suffix(".json").read_text())
    assert config["classes"] == ["Cat", "Dog"] and config["params"]["hidden"] == 32
    assert config["n_features_in"] == 1280
    # A state_dict readable without unpickling arbitrary objects.
    assert set(torch.load(artefacts.model("head"), weights_only=True)) == set(head.module_.state_dict())
    loaded = load_head(artefacts, "head")
    X = cat_dog_embeddings["val"]["X"]
    assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert loaded.classes_.tolist() == head.classes_.tolist()


@pytest.mark.unit
def test_tampered_or_mismatched_files_are_refused(cat_dog_embeddings, tmp_path):
    head = fit(cat_dog_embeddings, random_state=0)
    head.save(tmp_path / "head.pt")
    good_pt, good_json = (tmp_path / "head.pt").read_bytes(), (tmp_path / "head.json").read_text()

    (tmp_path / "head.pt").write_bytes(good_pt[:-10] + b"\0" * 10)
    with pytest.raises(PetprobeError, match="does not match head.json"):
        TorchHead.load(tmp_path / "head.pt")

    # A .pt that matches its recorded sha256 but not the recorded architecture.
    config = json.loads(good_json)
    config["params"]["hidden"] = 64
    (tmp_path / "head.pt").write_bytes(good_pt)
    (tmp_path / "head.json").write_text(json.dumps(config))
    with pytest.raises(PetprobeError, match="not a state_dict matching head.json"):
        TorchHead.load(tmp_path / "head.pt")

    # Not a torch file at all, with a consistent checksum.
    junk = b"not a zip archive"
    config = {**json.loads(good_json), "weights_sha256": hashlib.sha256(junk).hexdigest()}
    (tmp_path / "head.pt").write_bytes(junk)
    (tmp_path / "head.json").write_text(json.dumps(config))
    with pytest.raises(PetprobeError, match="not a state_dict"):
        TorchHead.load(tmp_path / "head.pt")

    (tmp_path / "head.json").write_text("{")
    with pytest.raises(PetprobeError, match="head.json"):
        TorchHead.load(tmp_path / "head.pt")
    (tmp_path / "head.json").unlink()
    with pytest.raises(PetprobeError, match="rerun train_head"):
        TorchHead.load(tmp_path / "head.pt")
    with pytest.raises(PetprobeError, match="missing"):
        load_head(Artefacts("catsdogs", tmp_path / "nowhere"), "head")
