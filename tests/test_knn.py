"""The weighted kNN probe: checked against scikit-learn's neighbour search and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from petprobe.errors import PetprobeError
from petprobe.heads.knn import KNNHead
from petprobe.outputs import save_npz

pytestmark = pytest.mark.unit


def _reference_proba(X_train, y_train, X_test, k, temperature):
    """DINO's vote, written independently: scikit-learn finds the neighbours by cosine distance
    (1 - similarity), each adds exp(similarity / T) to its class, the votes are normalised."""
    classes = sorted(set(y_train))
    search = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(X_train)
    distances, neighbours = search.kneighbors(X_test)
    proba = np.zeros((len(X_test), len(classes)))
    for row, (dist, idx) in enumerate(zip(distances, neighbours)):
        for d, j in zip(dist, idx):
            proba[row, classes.index(y_train[j])] += np.exp((1.0 - d) / temperature)
    return proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k, temperature", [(20, 0.07), (5, 0.5), (1, 0.07), (200, 1.0)])
def test_probabilities_equal_sklearn_neighbours_with_dino_votes(k, temperature):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    y_train = np.repeat(np.array(["a", "b", "c", "d"]), 40)
    X_train = centres[np.searchsorted(["a", "b", "c", "d"], y_train)] + rng.normal(scale=1.5, size=(160, 32))
    X_test = centres[rng.integers(0, 4, 50)] + rng.normal(scale=1.5, size=(50, 32))
    head = KNNHead(k=k, temperature=temperature).fit(X_train.astype(np.float32), y_train)
    expected = _reference_proba(X_train.astype(np.float32).astype(np.float64), list(y_train),
                                X_test.astype(np.float32).astype(np.float64), min(k, 160), temperature)
    np.testing.assert_allclose(head.predict_proba(X_test), expected, atol=1e-5)
    assert list(head.classes_) == ["a", "b", "c", "d"]
    assert (head.predict(X_test) == np.array(["a", "b", "c", "d"])[expected.argmax(axis=1)]).all()


def test_a_hand_computed_case():
    # Query along x; train images at angles 0, 60, 90 and 180 degrees: cosines 1, 0.5, 0, -1.
    X_train = np.array([[1, 0], [0.5, np.sqrt(3) / 2], [0, 3], [-2, 0]], np.float32)
    y_train = np.array(["cat", "dog", "dog", "cat"])
    head = KNNHead(k=3, temperature=0.5).fit(X_train, y_train)
    # The three nearest: cosines 1 (cat), 0.5 (dog), 0 (dog); weights e^2, e^1, e^0.
    cat, dog = np.exp(2.0), np.exp(1.0) + 1.0
    np.testing.assert_allclose(head.predict_proba([[4.0, 0.0]]), [[cat / (cat + dog), dog / (cat + dog)]], rtol=1e-6)
    # A tiny temperature does not overflow: the nearest neighbour takes (almost) everything.
    sharp = KNNHead(k=3, temperature=1e-4).fit(X_train, y_train)
    np.testing.assert_allclose(sharp.predict_proba([[4.0, 0.0]]), [[1.0, 0.0]], atol=1e-12)


def test_save_load_and_the_torch_module_give_the_same_probabilities(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 16)).astype(np.float32), rng.choice(["x", "y", "z"], 60)
    head = KNNHead(k=7, temperature=0.1).fit(X, y)
    head.save(tmp_path / "knn.npz")
    back = KNNHead.load(tmp_path / "knn.npz")
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    np.testing.assert_array_equal(back.predict_proba(queries), head.predict_proba(queries))
    assert (back.k, back.temperature, list(back.classes_)) == (7, 0.1, ["x", "y", "z"])
    logits = head.to_module()(torch.from_numpy(queries))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), head.predict_proba(queries), atol=1e-6)


def test_a_tampered_file_is_one_line(tmp_path):
    path = tmp_path / "knn.npz"
    save_npz(path, train_embeddings=np.ones((3, 2), np.float32), train_labels=np.array([0, 1, 5]),
             classes=np.array(["a", "b"]), k=np.int64(2), temperature=np.float64(0.07))
    with pytest.raises(PetprobeError, match="labels outside its 2 classes; rerun train_knn"):
        KNNHead.load(path)
    save_npz(tmp_path / "other.npz", train_embeddings=np.array(["x"]), train_labels=np.array([0]), classes=np.array(["a"]),
             k=np.int64(2), temperature=np.float64(0.07))
    with pytest.raises(PetprobeError, match="not a valid kNN-probe file .*'train_embeddings' has the wrong type"):
        KNNHead.load(tmp_path / "other.npz")
