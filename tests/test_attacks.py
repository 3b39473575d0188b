"""Targeted attacks on a real classifier (efficientnet_lite0 + logreg) and real photos."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from petprobe.probing.attacks import PGD, Unbounded, assess, png_roundtrip, pooled_summary, quantize


@pytest.fixture(scope="module")
def small(cat_dog_classifier):
    """The classifier, class names, and the 8 photos at 96 px (enough for the invariants, 5x cheaper)."""
    model, classes, images = cat_dog_classifier
    return model, classes, F.interpolate(images, size=96, mode="bilinear", antialias=True).clamp(0, 1)


def flipped(classes, n_cats=4, n_dogs=4):
    """Targets: Dog for the four cats, Cat for the four dogs."""
    return torch.tensor([classes.index("Dog")] * n_cats + [classes.index("Cat")] * n_dogs)


@pytest.mark.integration
def test_pgd_stays_in_the_eps_ball_and_in_unit_range(small):
    model, classes, images = small
    eps = 2 / 255
    adv = PGD(model, eps=eps, alpha=1 / 255, steps=3, random_start=True, seed=0)(images, flipped(classes))
    assert adv.shape == images.shape
    assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    # 1e-6: adv = images + clamped delta is one float rounding away from the exact ball.
    assert float((adv - images).abs().max()) <= eps + 1e-6
    assert float((adv - images).abs().max()) > eps / 2  # it did move


@pytest.mark.integration
def test_pgd_same_seed_same_images_other_seed_other_images(small):
    model, classes, images = small
    targets = flipped(classes)
    def make(seed):
        return PGD(model, eps=4 / 255, alpha=1 / 255, steps=2, seed=seed)(images[:2], targets[:2])

    first = make(0)
    assert torch.equal(first, make(0))
    assert not torch.equal(first, make(1))


@pytest.mark.integration
def test_pgd_restores_training_mode_and_leaves_model_gradients_alone(small):
    model, classes, images = small
    model.train()
    try:
        PGD(model, eps=1 / 255, alpha=1 / 255, steps=1)(images[:1], flipped(classes)[:1])
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.unit
def test_pgd_repr_lists_its_hyperparameters(small):
    model, _, _ = small
    assert repr(PGD(model, eps=4 / 255, alpha=1 / 255, steps=10, random_start=False, seed=3)) == \
        "PGD(eps=0.015686, alpha=0.003922, steps=10, random_start=False, seed=3)"
    assert repr(Unbounded(model, alpha=1 / 255, steps=50)) == "Unbounded(alpha=0.003922, steps=50)"


@pytest.mark.integration
def test_pgd_turns_dogs_into_cats_at_224px(cat_dog_classifier):
    model, classes, images = cat_dog_classifier
    dogs, cat = images[4:6], classes.index("Cat")
    targets = torch.full((2,), cat)
    adv = PGD(model, eps=8 / 255, alpha=2 / 255, steps=5, seed=0, batch_size=1)(dogs, targets)
    result = assess(model, dogs, adv, targets)
    assert result.success.all()
    assert float(result.p_target.min()) > 0.9
    assert torch.allclose(result.linf, torch.full((2,), 8 / 255), atol=1e-6)


@pytest.mark.integration
def test_unbounded_leaves_fooled_images_alone_and_moves_the_others(small):
    model, classes, images = small
    with torch.no_grad():
        predicted = model(images[:2]).argmax(1)
    # Image 0 already "is" its target; image 1 must be pushed to the other class.
    targets = torch.stack([predicted[0], 1 - predicted[1]])
    adv = Unbounded(model, alpha=1 / 255, steps=30)(images[:2], targets)
    assert torch.equal(adv[0], images[0])
    assert not torch.equal(adv[1], images[1])
    assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    with torch.no_grad():
        assert int(model(adv[1:]).argmax(1)) == int(targets[1])


@pytest.mark.unit
def test_quantize_rounds_to_8_bit_levels_and_png_roundtrip_reads_real_files(tmp_path):
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    levels = quantize(images)
    assert levels.dtype == torch.uint8 and levels.shape == (2, 8, 8, 3)
    back = png_roundtrip(images, tmp_path)
    assert not torch.equal(back, images)  # random floats are not on the 1/255 grid
    assert torch.equal(back, levels.permute(0, 3, 1, 2).float() / 255)
    assert float((back - images).abs().max()) <= 0.5 / 255 + 1e-7
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2
    with Image.open(files[0]) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (8, 8))


class MeanThreshold(nn.Module):
    """Logits (0, mean(x) - threshold): class 1 exactly when the mean pixel exceeds the threshold."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(threshold), requires_grad=False)

    def forward(self, x):
        score = x.flatten(1).mean(1) - self.threshold
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.mark.unit
def test_assess_recomputes_success_on_the_image_read_back_from_png():
    # 127.4/255 beats the threshold 127.2/255 as a float, but the PNG stores 127/255, which does not.
    model = MeanThreshold(127.2 / 255)
    images = torch.full((1, 3, 4, 4), 127 / 255)
    adversarial = torch.full((1, 3, 4, 4), 127.4 / 255)
    result = assess(model, images, adversarial, torch.tensor([1]))
    assert result.success.tolist() == [True]
    assert result.png_model_input_success.tolist() == [False]
    assert float(result.png_model_input_p_target) < 0.5 < float(result.p_target)
    assert result.png_via_predict_success is None  # no predict path given


@pytest.mark.unit
def test_transfer_success_counts_only_images_the_transfer_model_gets_right_when_clean():
    # The transfer model calls an image "target" (1) when its mean is above 0.5. Images 0-1 are dark
    # (right: source 0), images 2-3 bright (already wrong, "target", when clean). The attack changed
    # nothing except brightening image 0, which now fools it.
    transfer = MeanThreshold(0.5)
    images = torch.tensor([0.2, 0.2, 0.8, 0.8]).view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()
    adversarial = images.clone()
    adversarial[0] = 0.9
    goal, source = torch.ones(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    result = assess(MeanThreshold(0.5), images, adversarial, goal, transfer=transfer, transfer_targets=goal,
                    transfer_sources=source)
    assert result.transfer_clean_correct.tolist() == [True, True, False, False]
    assert result.transfer_success.tolist() == [True, False, True, True]  # counting all images: 3 of 4
    summary = result.summary()
    assert summary["transfer_n_clean_correct"] == 2 and summary["transfer_success_of_clean_correct"] == 0.5
    pooled = pooled_summary([result, result])
    assert pooled["transfer_n_clean_correct"] == 4 and pooled["transfer_success_of_clean_correct"] == 0.5


@pytest.mark.unit
def test_transfer_is_also_counted_over_the_images_whose_white_box_attack_succeeded():
    # White-box model: "target" (1) above a mean of 0.5; transfer model: above 0.7. Clean images are
    # dark (source 0) but the last; the attack brightens images 0 (to 0.9) and 1 (to 0.6).
    images = torch.tensor([0.2, 0.2, 0.2, 0.8]).view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()
    adversarial = torch.tensor([0.9, 0.6, 0.2, 0.8]).view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()
    goal, source = torch.ones(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    result = assess(MeanThreshold(0.5), images, adversarial, goal, transfer=MeanThreshold(0.7),
                    transfer_targets=goal, transfer_sources=source)
    assert result.success.tolist() == [True, True, False, True]  # white-box
    assert result.transfer_clean_correct.tolist() == [True, True, True, False]
    assert result.transfer_success.tolist() == [True, False, False, True]
    # By hand: right when clean, images 0-2, transferred 0: 1/3. Of those, white-box fooled 0-1: 1/2.
    summary = result.summary()
    assert summary["transfer_n_clean_correct"] == 3
    assert summary["transfer_success_of_clean_correct"] == pytest.approx(1 / 3, abs=1e-6)
    assert summary["transfer_n_whitebox_success"] == 2 and summary["transfer_success_of_whitebox_success"] == 0.5
    pooled = pooled_summary([result, result])
    assert pooled["transfer_n_whitebox_success"] == 4 and pooled["transfer_success_of_whitebox_success"] == 0.5
    # No image fooled the white-box model: no rate, not zero.
    none = assess(MeanThreshold(0.95), images, adversarial, goal, transfer=MeanThreshold(0.7), transfer_targets=goal,
                  transfer_sources=source).summary()
    assert none["transfer_n_whitebox_success"] == 0 and none["transfer_success_of_whitebox_success"] is None


@pytest.mark.integration
def test_png_via_predict_runs_the_saved_file_through_petprobe_predict(cat_dog_embeddings, cat_dog_images):
    import numpy as np

    from petprobe.backbones import get_backbone
    from petprobe.data.images import load_images, load_rgb
    from petprobe.heads.logreg import LogRegHead
    from petprobe.predict import Predictor
    from petprobe.probing.classifier import pixel_classifier, pixel_transforms

    train = cat_dog_embeddings["train"]
    head = LogRegHead(cs=(0.1,)).fit(train["X"], train["labels"])
    backbone = get_backbone("efficientnet_lite0")
    predictor = Predictor(backbone, head, precision_name="fp32")
    model = pixel_classifier(backbone, head.to_module())
    images = load_images(cat_dog_images[:2], pixel_transforms(backbone))  # 224 px model inputs
    seen = []

    def predict_files(paths):
        seen.extend(paths)
        # What `petprobe predict` would do with these files, checked below against a hand-made path.
        expected = head.predict_proba(backbone.build()(torch.stack(
            [backbone.transforms()(load_rgb(p)) for p in paths])).detach().numpy())
        got = predictor.predict_proba(paths, progress=False)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        return torch.from_numpy(got)

    targets = torch.tensor([1, 1])
    result = assess(model, images, images, targets, predict_files=predict_files)
    assert len(seen) == 2 and all(p.endswith(".png") for p in seen)
    # resize 256 + crop 224 of the saved 224-px PNG is not the model input it was read back as.
    assert not torch.allclose(result.png_via_predict_p_target, result.png_model_input_p_target.float(), atol=1e-3)
    assert {"png_via_predict_success", "png_via_predict_p_target"} <= set(result.summary())
