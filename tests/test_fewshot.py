"""Few-shot curves: draws from the pool only, k per class, each row's top-1 against scikit-learn."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from petprobe.errors import PetprobeError
from petprobe.heads.fewshot import ALL, fewshot_curve, fewshot_rows
from petprobe.heads.knn import KNNHead
from petprobe.heads.logreg import LogRegHead
from petprobe.params import parse_params

pytestmark = pytest.mark.unit

C = 0.05


def _data():
    rng = np.random.default_rng(3)
    classes = np.array(["a", "b", "c"])
    centres = rng.normal(size=(3, 24))
    y_pool = np.repeat(classes, [30, 25, 4])  # class c has fewer images than the largest k
    X_pool = centres[np.searchsorted(classes, y_pool)] + rng.normal(scale=1.2, size=(len(y_pool), 24))
    y_test = rng.choice(classes, 60)
    X_test = centres[np.searchsorted(classes, y_test)] + rng.normal(scale=1.2, size=(60, 24))
    return X_pool, y_pool, X_test, y_test, list(classes)


def test_rows_draw_k_per_class_from_the_pool_and_score_like_sklearn():
    X_pool, y_pool, X_test, y_test, classes = _data()
    probes = {"lr": lambda: LogRegHead(cs=(C,)), "nn": lambda: KNNHead(k=1, temperature=0.07)}
    rows = fewshot_rows(X_pool, y_pool, X_test, y_test, classes, probes, shots=[1, 5, ALL], draws=3, seed=0)
    assert [(r["probe"], r["shots"], r["draw"]) for r in rows][:4] == [("lr", 1, 0), ("nn", 1, 0), ("lr", 1, 1),
                                                                        ("nn", 1, 1)]
    assert len(rows) == 2 * (3 + 3 + 1)
    for row in rows:
        idx = row["indices"]
        counts = {c: int((y_pool[idx] == c).sum()) for c in classes}
        expected = {c: int((y_pool == c).sum()) if row["shots"] == ALL else min(row["shots"], int((y_pool == c).sum()))
                    for c in classes}
        assert counts == expected and len(set(idx)) == len(idx) == row["n_train"]  # no repeats, pool rows only
        X, y = X_pool[idx], y_pool[idx]
        if row["probe"] == "lr":  # scikit-learn's own fit on the standardised draw at the same C
            scaler = StandardScaler().fit(X)
            reference = LogisticRegression(C=C, max_iter=10000, tol=1e-10).fit(scaler.transform(X), y)
            predicted = reference.predict(scaler.transform(X_test))
        else:  # one neighbour by cosine distance
            predicted = KNeighborsClassifier(1, metric="cosine", algorithm="brute").fit(X, y).predict(X_test)
        assert row["top1"] == pytest.approx(float((predicted == y_test).mean()), abs=1e-6)
    # The same seed draws the same images; another seed, others.
    again = fewshot_rows(X_pool, y_pool, X_test, y_test, classes, probes, shots=[1, 5, ALL], draws=3, seed=0)
    assert all((a["indices"] == b["indices"]).all() for a, b in zip(rows, again))
    other = fewshot_rows(X_pool, y_pool, X_test, y_test, classes, probes, shots=[5], draws=1, seed=1)
    assert not np.array_equal(other[0]["indices"], rows[6]["indices"])


def test_the_curve_is_the_mean_and_sample_sd_over_draws():
    rows = [{"probe": p, "shots": k, "draw": d, "top1": t} for p, k, d, t in [
        ("lr", 1, 0, 0.5), ("lr", 1, 1, 0.6), ("lr", 1, 2, 0.8), ("nn", 1, 0, 0.4), ("nn", 1, 1, 0.4),
        ("nn", 1, 2, 0.7), ("lr", ALL, 0, 0.9), ("nn", ALL, 0, 0.85)]]
    curve = fewshot_curve(rows, all_shots=19.6667)
    assert curve[0]["shots"] == 1 and curve[0]["label"] == "1" and curve[0]["lr_draws"] == 3
    assert curve[0]["lr"] == pytest.approx(statistics.mean([0.5, 0.6, 0.8]), abs=1e-6)
    assert curve[0]["nn_sd"] == pytest.approx(statistics.stdev([0.4, 0.4, 0.7]), abs=1e-6)
    assert curve[1] == {"shots": 19.667, "label": "all", "lr": 0.9, "lr_sd": 0.0, "lr_draws": 1, "nn": 0.85,
                        "nn_sd": 0.0, "nn_draws": 1}


@pytest.mark.parametrize("raw, message", [
    ({"fewshot": {"shots": [1, 5, 1]}}, "'fewshot.shots' must hold distinct image counts"),
    ({"fewshot": {"shots": [-1]}}, "'fewshot.shots' must hold distinct image counts"),
    ({"head": {"seed": 3, "spread_seeds": [1, 3]}}, "'head.spread_seeds' must hold distinct seeds .* saved model's \\(3\\)"),
    ({"knn": {"k": 0}}, "'knn.k' is 0; it must be >= 1"),
])
def test_bad_probe_params_are_one_line(raw, message):
    with pytest.raises(PetprobeError, match=message):
        parse_params(raw)
