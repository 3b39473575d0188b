"""Feature-visualisation parts: transforms, objectives, parametrisations, and the render loop."""

import functools

import torch
import torch.nn.functional as F

from petprobe.probing.visualise import (class_log_prob, class_logit, color_sqrt, compose, fourier_image, jitter, l2, pad,
                              pixel_image, random_rotate, random_scale, render, standard_transforms, total_variation)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pad_surrounds_the_image_with_grey():
    out = pad(2)(torch.ones(1, 3, 4, 4), gen())
    assert out.shape == (1, 3, 8, 8)
    assert torch.equal(out[..., 2:6, 2:6], torch.ones(1, 3, 4, 4))
    assert float(out[..., 0, :].max()) == 0.5 and float(out[..., :, -1].min()) == 0.5


def test_jitter_crops_d_pixels_at_a_seeded_offset():
    image = torch.arange(64.0).view(1, 1, 8, 8)
    first = jitter(3)(image, gen(5))
    assert first.shape == (1, 1, 5, 5)
    assert torch.equal(first, jitter(3)(image, gen(5)))
    dy, dx = divmod(int(first[0, 0, 0, 0]), 8)  # the top-left value names the offset
    assert 0 <= dy <= 3 and 0 <= dx <= 3


def test_scale_and_rotate_keep_a_constant_image_constant():
    ones = torch.ones(1, 3, 10, 10)
    assert torch.equal(random_scale([1.0])(ones, gen()), ones)
    assert random_scale([1.2])(ones, gen()).shape == (1, 3, 12, 12)
    assert torch.allclose(random_rotate([30])(ones, gen()), ones)
    assert torch.equal(random_rotate([0])(ones, gen()), ones)


def test_rotate_by_90_degrees_turns_the_image():
    image = torch.zeros(1, 1, 5, 5)
    image[..., 0, 2] = 1.0  # top middle
    turned = random_rotate([90])(image, gen())
    assert turned.argmax() != image.argmax()
    assert torch.allclose(turned, torch.rot90(image, 1, (2, 3)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(image, -1, (2, 3)), atol=1e-5)


def test_compose_applies_transforms_in_order():
    out = compose([pad(1), jitter(2)])(torch.ones(1, 3, 4, 4), gen())
    assert out.shape == (1, 3, 4, 4)


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


def test_parametrisations_give_images_in_unit_range():
    for param_f in (pixel_image, functools.partial(fourier_image, color=torch.eye(3))):
        params, image_f = param_f((2, 3, 16, 12), generator=gen())
        image = image_f().detach()
        assert image.shape == (2, 3, 16, 12)
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        assert all(p.requires_grad for p in params)


def test_color_sqrt_squares_to_the_scaled_colour_covariance():
    images = torch.rand(4, 3, 8, 8, generator=gen())
    images[:, 1] = 0.5 * images[:, 0] + 0.5 * images[:, 1]  # correlated channels
    root = color_sqrt(images)
    cov = torch.cov(images.permute(1, 0, 2, 3).flatten(1))
    assert torch.allclose(root, root.T, atol=1e-6)
    square = root @ root
    assert torch.allclose(square / square[0, 0], cov / cov[0, 0], atol=1e-5)
    assert abs(float(root.norm(dim=0).max()) - 1.0) < 1e-6


def test_render_with_random_transforms_is_reproduced_by_its_seed(cat_dog_classifier):
    model, classes, _ = cat_dog_classifier
    objective = class_log_prob([classes.index("Cat"), classes.index("Dog")]) - 0.05 * total_variation()
    param_f = functools.partial(fourier_image, (2, 3, 48, 48))
    run = lambda seed, steps: render(model, objective, param_f, standard_transforms(), steps=steps, seed=seed)  # noqa
    first = run(0, 6)
    assert first.shape == (2, 3, 48, 48)
    assert torch.equal(first, run(0, 6))
    assert not torch.equal(run(0, 1), run(1, 1))


def test_render_raises_the_target_probability(cat_dog_classifier):
    model, classes, _ = cat_dog_classifier
    targets = [classes.index("Cat"), classes.index("Dog")]
    param_f = functools.partial(pixel_image, (2, 3, 64, 64))
    images = {steps: render(model, class_log_prob(targets), param_f, steps=steps, lr=0.05, seed=0) for steps in (0, 8)}
    with torch.no_grad():
        start, end = (F.softmax(model(images[n]), 1)[[0, 1], targets] for n in (0, 8))
    assert (end > start).all()
    assert float(end.min()) > 0.9
