"""Temperature scaling, ECE, the reliability table and the spread over seeds, against references."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.metrics import log_loss as sk_log_loss

from petprobe.heads.calibration import fit_temperature, reliability_table
from petprobe.heads.metrics import expected_calibration_error, seed_spread
from petprobe.heads.torch_head import TorchHead


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _brute_force_temperature(logits, labels):
    """A grid search over log T of the mean NLL, written with scipy's logsumexp: 2001 points over
    [0.05, 20], then 2001 points within two steps of the best one (final step about 6e-6 on log T)."""
    rows = np.arange(len(labels))

    def nll(log_ts):
        scaled = logits[None] / np.exp(log_ts)[:, None, None]
        return (logsumexp(scaled, axis=2) - scaled[:, rows, labels]).mean(axis=1)

    grid = np.linspace(np.log(0.05), np.log(20.0), 2001)
    best = grid[np.argmin(nll(grid))]
    step = grid[1] - grid[0]
    fine = np.linspace(best - 2 * step, best + 2 * step, 2001)
    values = nll(fine)
    return float(np.exp(fine[np.argmin(values)])), float(values.min())


@pytest.mark.unit
@pytest.mark.parametrize("scale", [4.0, 0.3])  # over-confident logits (T > 1), under-confident ones (T < 1)
def test_fitted_temperature_is_the_brute_force_minimum_of_the_nll(scale):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 1.5 * np.eye(5)[labels]
    logits = scale * logits
    expected, best_nll = _brute_force_temperature(logits, labels)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(expected, rel=1e-4)
    assert sk_log_loss(labels, _softmax(logits / fitted), labels=np.arange(5)) <= best_nll + 1e-9
    assert (fitted > 1) == (scale > 1)


@pytest.mark.unit
def test_a_val_set_without_mistakes_leaves_the_logits_unscaled():
    # Every label is the argmax: the NLL falls all the way to T -> 0, so T is not identified.
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 2.5]])
    assert fit_temperature(logits, np.array([0, 1, 0, 1])) == 1.0


@pytest.mark.unit
def test_ece_and_the_reliability_table_of_a_hand_computed_case():
    # Two classes, 15 bins of width 1/15. Confidences 0.95, 0.95 (bin 14: one right, one wrong),
    # 0.6, 0.6, 0.6 (bin 9: all right). Bin 14: |0.5 - 0.95| = 0.45, weight 2/5; bin 9: |1 - 0.6| = 0.4,
    # weight 3/5. ECE = 0.4 * 0.45 + 0.6 * 0.4 = 0.42.
    proba = np.array([[0.95, 0.05], [0.95, 0.05], [0.4, 0.6], [0.6, 0.4], [0.6, 0.4]])
    y = np.array(["a", "b", "b", "a", "a"])
    assert expected_calibration_error(proba, y, ["a", "b"]) == pytest.approx(0.42, abs=1e-12)
    assert reliability_table(proba, y, ["a", "b"]) == [
        {"bin_low": 0.6, "bin_high": 0.666667, "n": 3, "confidence": 0.6, "accuracy": 1.0},
        {"bin_low": 0.933333, "bin_high": 1.0, "n": 2, "confidence": 0.95, "accuracy": 0.5}]


@pytest.mark.unit
def test_seed_spread_is_the_sample_mean_and_sd():
    per_seed = {seed: {"top1": t, "balanced_accuracy": t - 0.01, "log_loss": 0.3 + t, "ece": 0.05}
                for seed, t in zip((0, 1, 2, 3, 4), (0.912, 0.947, 0.93, 0.921, 0.94))}
    spread = seed_spread(per_seed)
    values = [0.912, 0.947, 0.93, 0.921, 0.94]
    assert spread["n_seeds"] == 5 and spread["seeds"] == [0, 1, 2, 3, 4]
    assert spread["top1"]["mean"] == pytest.approx(statistics.mean(values), abs=1e-6)
    assert spread["top1"]["sd"] == pytest.approx(statistics.stdev(values), abs=1e-6)
    assert (spread["top1"]["min"], spread["top1"]["max"], spread["top1"]["per_seed"]) == (0.912, 0.947, values)
    assert seed_spread({7: per_seed[0]})["top1"]["sd"] is None


@pytest.mark.integration  # a real head trained on real embeddings: several seconds
def test_the_torch_head_is_scaled_by_its_val_temperature_everywhere(cat_dog_embeddings, tmp_path):
    train, val = cat_dog_embeddings["train"], cat_dog_embeddings["val"]
    # Without refit the saved network is the early-stopping one: its own val logits give the temperature.
    head = TorchHead(hidden=32, lr=3e-3, batch_size=4, max_epochs=30, patience=5, refit=False, random_state=0)
    head.fit(train["X"], train["labels"], val["X"], val["labels"])
    raw = head.decision_function(val["X"]) * head.temperature_
    labels = np.searchsorted(head.classes_, val["labels"])
    expected, _ = _brute_force_temperature(raw, labels)
    assert head.temperature_ == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(head.predict_proba(val["X"]), _softmax(raw / head.temperature_), atol=1e-9)
    np.testing.assert_allclose(head.uncalibrated_proba(val["X"]), _softmax(raw), atol=1e-9)
    module_logits = head.to_module()(torch.from_numpy(val["X"].astype(np.float32))).double().numpy()
    np.testing.assert_allclose(_softmax(module_logits), head.predict_proba(val["X"]), atol=1e-5)
    head.save(tmp_path / "head.pt")
    back = TorchHead.load(tmp_path / "head.pt")
    assert back.temperature_ == head.temperature_
    np.testing.assert_allclose(back.predict_proba(val["X"]), head.predict_proba(val["X"]), atol=1e-12)
