"""Feature-visualisation parts: transforms, objectives, parametrisations, and the render loop."""

import functools

import pytest
import torch
import torch.nn.functional as F

from petprobe.probing.visualise import (
    adjust_color,
    class_log_prob,
    class_logit,
    color_jitter,
    color_sqrt,
    compose,
    crop_resize,
    fourier_image,
    heldout_transforms,
    ideal_summary,
    jitter,
    l2,
    p_target_under_transforms,
    pad,
    pixel_image,
    random_flip,
    random_resized_crop,
    random_rotate,
    random_scale,
    render,
    standard_transforms,
    total_variation,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.unit
def test_pad_surrounds_the_image_with_grey():
    out = pad(2)(torch.ones(1, 3, 4, 4), gen())
    assert out.shape == (1, 3, 8, 8)
    assert torch.equal(out[..., 2:6, 2:6], torch.ones(1, 3, 4, 4))
    assert float(out[..., 0, :].max()) == 0.5 and float(out[..., :, -1].min()) == 0.5


@pytest.mark.unit
def test_jitter_crops_d_pixels_at_a_seeded_offset():
    image = torch.arange(64.0).view(1, 1, 8, 8)
    first = jitter(3)(image, gen(5))
    assert first.shape == (1, 1, 5, 5)
    assert torch.equal(first, jitter(3)(image, gen(5)))
    dy, dx = divmod(int(first[0, 0, 0, 0]), 8)  # the top-left value names the offset
    assert 0 <= dy <= 3 and 0 <= dx <= 3


@pytest.mark.unit
def test_scale_and_rotate_keep_a_constant_image_constant():
    ones = torch.ones(1, 3, 10, 10)
    assert torch.equal(random_scale([1.0])(ones, gen()), ones)
    assert random_scale([1.2])(ones, gen()).shape == (1, 3, 12, 12)
    assert torch.allclose(random_rotate([30])(ones, gen()), ones)
    assert torch.equal(random_rotate([0])(ones, gen()), ones)


@pytest.mark.unit
def test_rotate_by_90_degrees_turns_the_image():
    image = torch.zeros(1, 1, 5, 5)
    image[..., 0, 2] = 1.0  # top middle
    turned = random_rotate([90])(image, gen())
    assert turned.argmax() != image.argmax()
    assert torch.allclose(turned, torch.rot90(image, 1, (2, 3)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(image, -1, (2, 3)), atol=1e-5)


@pytest.mark.unit
def test_compose_applies_transforms_in_order():
    out = compose([pad(1), jitter(2)])(torch.ones(1, 3, 4, 4), gen())
    assert out.shape == (1, 3, 4, 4)


@pytest.mark.unit
def test_objectives_combine_with_plus_minus_times():
    logits = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    image = torch.zeros(2, 3, 2, 2)
    image[1, :, 0, 0] = 1.0
    tv = total_variation()(logits, image)
    # Per direction, 1 of the 2 neighbour pairs of each channel differs by 1: 0.5 + 0.5.
    assert torch.allclose(tv, torch.tensor([0.0, 1.0]))
    score = (class_logit([1, 0]) - 2 * total_variation() + 0.5 * l2(0.0))(logits, image)
    expected = torch.tensor([3.0, 2.0]) - 2 * tv + 0.5 * torch.tensor([0.0, 3 / 12])
    assert torch.allclose(score, expected)
    log_p = class_log_prob([0, 0])(logits, image)
    assert torch.allclose(log_p, logits.log_softmax(1)[:, 0])


@pytest.mark.unit
def test_parametrisations_give_images_in_unit_range():
    for param_f in (pixel_image, functools.partial(fourier_image, color=torch.eye(3))):
        params, image_f = param_f((2, 3, 16, 12), generator=gen())
        image = image_f().detach()
        assert image.shape == (2, 3, 16, 12)
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        assert all(p.requires_grad for p in params)


@pytest.mark.unit
def test_color_sqrt_squares_to_the_scaled_colour_covariance():
    images = torch.rand(4, 3, 8, 8, generator=gen())
    images[:, 1] = 0.5 * images[:, 0] + 0.5 * images[:, 1]  # correlated channels
    root = color_sqrt(images)
    cov = torch.cov(images.permute(1, 0, 2, 3).flatten(1))
    assert torch.allclose(root, root.T, atol=1e-6)
    square = root @ root
    assert torch.allclose(square / square[0, 0], cov / cov[0, 0], atol=1e-5)
    assert abs(float(root.norm(dim=0).max()) - 1.0) < 1e-6


@pytest.mark.integration
def test_render_with_random_transforms_is_reproduced_by_its_seed(cat_dog_classifier):
    model, classes, _ = cat_dog_classifier
    objective = class_log_prob([classes.index("Cat"), classes.index("Dog")]) - 0.05 * total_variation()
    param_f = functools.partial(fourier_image, (2, 3, 48, 48))
    run = lambda seed, steps: render(model, objective, param_f, standard_transforms(), steps=steps, seed=seed)  # noqa
    first = run(0, 6)
    assert first.shape == (2, 3, 48, 48)
    assert torch.equal(first, run(0, 6))
    assert not torch.equal(run(0, 1), run(1, 1))


@pytest.mark.integration
def test_render_raises_the_target_probability(cat_dog_classifier):
    model, classes, _ = cat_dog_classifier
    targets = [classes.index("Cat"), classes.index("Dog")]
    param_f = functools.partial(pixel_image, (2, 3, 64, 64))
    images = {steps: render(model, class_log_prob(targets), param_f, steps=steps, lr=0.05, seed=0) for steps in (0, 8)}
    with torch.no_grad():
        start, end = (F.softmax(model(images[n]), 1)[[0, 1], targets] for n in (0, 8))
    assert (end > start).all()
    assert float(end.min()) > 0.9


# --- the held-out family the ideal images are judged under ---


@pytest.mark.unit
def test_crop_resize_and_adjust_color_equal_torchvision():
    from torchvision.transforms.v2 import functional as TF

    images = torch.rand(2, 3, 20, 24, generator=gen(3))
    assert torch.allclose(crop_resize(images, 3, 5, 11, 14), TF.resized_crop(images, 3, 5, 11, 14, [20, 24]), atol=1e-6)
    for factors in ((1.3, 0.7, 1.2), (0.7, 1.3, 0.75), (1.0, 1.0, 1.0)):
        expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(images, factors[0]), factors[1]),
                                        factors[2])
        assert torch.allclose(adjust_color(images, *factors), expected, atol=1e-6)


def _crop_box(transform, seed, size=(60, 80)):
    """Apply ``transform`` to an image whose channels are its row and column coordinates; read back
    the crop's area share and aspect ratio from the corners (exact for bilinear resizing of a ramp)."""
    h, w = size
    rows = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    out = transform(torch.stack([rows, cols, rows])[None], gen(seed))[0]
    # A crop of height ch resized to h samples rows top + (i + 0.5) ch / h - 0.5: the ramp's span is
    # ch (h - 1) / h from the first to the last output row.
    height = float(out[0, -1, 0] - out[0, 0, 0]) * h / (h - 1)
    width = float(out[1, 0, -1] - out[1, 0, 0]) * w / (w - 1)
    return height * width / (h * w), width / height


@pytest.mark.unit
def test_random_resized_crop_zooms_outside_the_optimisation_scales():
    boxes = [_crop_box(random_resized_crop((0.4, 0.7)), seed) for seed in range(40)]
    for area, aspect in boxes:
        # Rounding the crop to whole pixels moves the area and aspect a little.
        assert 0.4 - 0.02 <= area <= 0.7 + 0.02 and 3 / 4 - 0.03 <= aspect <= 4 / 3 + 0.03
        assert 1 / area ** 0.5 > 1.15  # zoom: the optimisation's random_scale stays within 0.9-1.1
    assert len({round(a, 3) for a, _ in boxes}) > 20  # drawn, not fixed
    same = random_resized_crop()(torch.rand(1, 3, 30, 30, generator=gen()), gen(7))
    assert torch.equal(same, random_resized_crop()(torch.rand(1, 3, 30, 30, generator=gen()), gen(7)))


@pytest.mark.unit
def test_random_flip_and_color_jitter_draw_from_their_ranges():
    image = torch.rand(1, 3, 8, 8, generator=gen())
    flips = [random_flip()(image, gen(seed)) for seed in range(40)]
    assert all(torch.equal(f, image) or torch.equal(f, image.flip(-1)) for f in flips)
    assert 10 < sum(torch.equal(f, image) for f in flips) < 30
    # A grey image through brightness alone: each value scaled by one factor within [0.7, 1.3].
    grey = torch.full((1, 3, 4, 4), 0.5)
    scaled = [float(color_jitter(0.3, 0.0, 0.0)(grey, gen(seed)).mean()) / 0.5 for seed in range(40)]
    assert all(0.7 <= f <= 1.3 for f in scaled) and max(scaled) - min(scaled) > 0.3


@pytest.mark.unit
def test_p_target_under_transforms_is_the_mean_probability_over_the_drawn_images():
    class Brightness(torch.nn.Module):  # logits (0, 10 (mean - 0.5)): p(1) = sigmoid of that
        def forward(self, x):
            score = 10 * (x.flatten(1).mean(1) - 0.5)
            return torch.stack([torch.zeros_like(score), score], 1)

    images = torch.full((2, 3, 8, 8), 0.55)
    images[1] = 0.45
    # Mirroring leaves these images as they are: p is sigmoid(+-0.5) whatever is drawn.
    p = p_target_under_transforms(Brightness(), images, [1, 0], [random_flip()], draws=5)
    assert torch.allclose(p, torch.sigmoid(torch.tensor([0.5, 0.5])), atol=1e-6)
    # Brightness draws f: p(1) of image 0 is sigmoid(10 (0.55 f - 0.5)), averaged over the draws
    # that the same seed gives a fresh closure.
    jitter_ = color_jitter(0.3, 0.0, 0.0)
    generator = gen(4)
    factors = [float(jitter_(torch.full((1, 3, 1, 1), 0.5), generator).mean()) / 0.5 for _ in range(6)]
    expected = torch.tensor([torch.sigmoid(torch.tensor(10 * (0.55 * f - 0.5))) for f in factors]).mean()
    p = p_target_under_transforms(Brightness(), images[:1], [1], [color_jitter(0.3, 0.0, 0.0)], draws=6, seed=4)
    assert float(p) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.unit
def test_heldout_transforms_keep_the_image_size_and_range():
    image = torch.rand(2, 3, 32, 32, generator=gen())
    out = compose(heldout_transforms())(image, gen(1))
    assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.unit
def test_ideal_summary_averages_each_measure_over_the_images_that_have_it():
    report = {"pixel": {"a": {"p": 0.2, "q": None}, "b": {"p": 0.4, "q": 0.9}},
              "fourier": {"a": {"p": 0.9, "q": 0.3}}, "imagenet_pixel": {"z": {"p": 1.0}}}
    assert ideal_summary(report, ["p", "q", "r"]) == {"p": {"mean": 0.5, "min": 0.2, "max": 0.9, "n_images": 3},
                                                      "q": {"mean": 0.6, "min": 0.3, "max": 0.9, "n_images": 2}}
