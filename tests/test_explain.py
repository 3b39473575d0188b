"""Attribution maps, their measures and the explain stage, on real photos, trimaps and weights."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from conftest import PETIMAGES, PETS
from petprobe.backbones import get_backbone
from petprobe.errors import PetprobeError
from petprobe.probing.attribution import (
    GradCAM,
    IntegratedGradients,
    feature_map_layer,
    feature_maps,
    randomised,
    split_classifier,
)
from petprobe.probing.classifier import pixel_transforms
from petprobe.probing.measures import (
    centred_gaussian,
    constant_maps,
    curve_auc,
    deletion_insertion,
    noisy_linear_impute,
    pet_share,
    pointing_hits,
    rank_correlation,
    read_trimap,
    trimap_like,
    uniform_map,
)

pytestmark = pytest.mark.integration

TRIMAP_PHOTOS = ["Abyssinian_101", "Abyssinian_107", "Bengal_107", "american_bulldog_106"]


def test_official_trimaps_read_as_pet_background_border_at_photo_size():
    for stem in TRIMAP_PHOTOS:
        photo = Image.open(PETS / "images" / f"{stem}.jpg")
        trimap = read_trimap(PETS / "annotations" / "trimaps" / f"{stem}.png", photo.size)
        assert trimap.shape == (photo.height, photo.width) and trimap.dtype == np.uint8
        assert set(np.unique(trimap)) == {1, 2, 3}
        # Through the backbone's resize and crop it stays a trimap, aligned with the photo.
        pixels, mask = trimap_like(photo.convert("RGB"), trimap, pixel_transforms(get_backbone("mobilenet_v2")))
        assert pixels.shape == (3, 224, 224) and mask.shape == (224, 224)
        assert set(mask.unique().tolist()) == {1, 2, 3}


def test_a_trimap_of_another_size_or_format_is_refused(tmp_path):
    official = PETS / "annotations" / "trimaps" / "Abyssinian_101.png"
    with pytest.raises(PetprobeError, match="trimap is"):
        read_trimap(official, (10, 10))
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)  # a 0/255 mask is not the official format
    with pytest.raises(PetprobeError, match=r"expected 1 \(pet\)"):
        read_trimap(mask)


def test_baselines_and_measures_on_a_known_trimap():
    trimap = torch.full((1, 9, 9), 2, dtype=torch.uint8)
    trimap[0, :4, :4] = 1  # the pet: a top-left corner; the border row and column around it are left out
    trimap[0, 4, :4] = trimap[0, :4, 4] = 3
    assert pet_share(uniform_map(1, 9, 9), trimap) == pytest.approx([16 / (81 - 8)])
    inside = torch.zeros(1, 9, 9)
    inside[0, 1, 1] = 1.0
    assert pet_share(inside, trimap) == pytest.approx([1.0]) and pointing_hits(inside, trimap) == pytest.approx([1])
    assert pointing_hits(centred_gaussian(1, 9, 9), trimap) == pytest.approx([0])  # centre is background here
    assert rank_correlation(inside, inside) == pytest.approx([1.0])


def test_a_constant_map_has_no_rank_correlation_and_is_counted():
    """Before, a constant map scored rank correlation 0 with anything: a sanity check it could never fail."""
    zero, ramp = torch.zeros(1, 4, 4), torch.arange(16.0).view(1, 4, 4)
    assert constant_maps(torch.cat([zero, ramp, torch.full((1, 4, 4), 3.0)])).tolist() == [True, False, True]
    assert np.isnan(rank_correlation(zero, ramp)).all() and np.isnan(rank_correlation(ramp, zero)).all()
    assert rank_correlation(ramp, ramp.flip(-1).flip(-2)) == pytest.approx([-1.0])


class RegionOnly(nn.Module):
    """Blacks out everything but a box: the model's logits depend on the box's pixels only."""

    def __init__(self, box):
        super().__init__()
        self.box = box

    def forward(self, x):
        keep = torch.zeros_like(x)
        (y0, y1), (x0, x1) = self.box
        keep[..., y0:y1, x0:x1] = 1
        return x * keep


def _region_model(backbone, head, box):
    """(classifier that sees only ``box``, the name of its Grad-CAM layer)."""
    net = backbone.build()
    model = split_classifier(backbone, head, net=net)
    model.normalize = nn.Sequential(RegionOnly(box), model.normalize)
    return model, feature_map_layer(model, backbone, net)


def _head_fit_on_what_it_sees(backbone, images, labels, box):
    """A logistic head fit on the features of the boxed images: a trained head (a randomly drawn
    one has no reason to give the target class positive channel weights, so Grad-CAM may be empty)."""
    from petprobe.heads.logreg import LogRegHead

    probe, _ = _region_model(backbone, nn.Identity(), box)
    with torch.no_grad():
        X = probe.backbone(probe.normalize(images)).numpy()
    return LogRegHead(cs=(0.1,)).fit(X, np.array(labels)).to_module()


@pytest.mark.parametrize("backbone_name", ["efficientnet_lite0", "mobilenet_v2"])
def test_maps_concentrate_on_the_only_region_the_model_sees(cat_dog_classifier, backbone_name):
    classifier, _, images = cat_dog_classifier
    images = images[[0, 1, 4, 5]]  # two cats, two dogs
    backbone = get_backbone(backbone_name)
    top_left, bottom_right = ((0, 112), (0, 112)), ((112, 224), (112, 224))  # a quarter of the image each
    head = (classifier.head if backbone_name == "efficientnet_lite0"
            else _head_fit_on_what_it_sees(backbone, images, ["Cat", "Cat", "Dog", "Dog"], top_left))
    region = torch.full((len(images), 224, 224), 2, dtype=torch.uint8)
    region[:, :112, :112] = 1
    model, layer = _region_model(backbone, head, top_left)
    targets = model(images).argmax(1)
    ig = IntegratedGradients(model, steps=4)(images, targets)
    cam = GradCAM(model, layer)(images, targets)
    assert ig.shape == cam.shape == (len(images), 224, 224) and (cam >= 0).all()
    # Gradients outside the box are exactly zero, so all of integrated gradients' mass is inside.
    assert pet_share(ig, region).min() == pytest.approx(1.0)
    # Grad-CAM weighs whole channels, so the black outside (whose activations are not zero) gets
    # some mass too; but its map must follow the box: more mass there than when the box is elsewhere.
    elsewhere = GradCAM(*_region_model(backbone, head, bottom_right))(images, targets)
    assert pet_share(cam, region).mean() > pet_share(elsewhere, region).mean() + 0.1
    # Sanity: re-drawing the head and the last block changes Grad-CAM's maps.
    # (A re-drawn model's map may come out all zero: no rank correlation, left out of the mean.)
    other = GradCAM(randomised(model, "head_last_block", seed=0), layer)(images, targets)
    assert not constant_maps(cam).any() and np.nanmean(rank_correlation(cam, other)) < 0.9


def test_feature_maps_go_from_fine_to_coarse():
    backbone = get_backbone("mobilenet_v2")
    net = backbone.build()
    image = pixel_transforms(backbone)(Image.open(PETIMAGES / "Cat" / "1.jpg").convert("RGB"))
    levels = feature_maps(net, backbone.transforms().transforms[-1](image), depths=4)
    sizes = [a.shape[-1] for _, a in levels]
    assert len(levels) == 4 and sizes == sorted(sizes, reverse=True) and sizes[0] == 112 and sizes[-1] == 7
    name, activation = levels[-1]
    means = activation.mean((1, 2))
    assert name.startswith("features") and (means[:-1] >= means[1:]).all()  # most active channel first


class HalfSum(nn.Module):
    """p(class 1) = sigmoid(8 * mean brightness of the left half): a model with a known deletion curve."""

    def forward(self, x):
        z = 8 * x[:, :, :, :112].mean((1, 2, 3))
        return torch.stack([torch.zeros_like(z), z], 1)


def test_deletion_curve_of_a_constructed_case():
    image = torch.ones(1, 3, 224, 224)
    left = torch.zeros(1, 224, 224)
    left[..., :112] = 1.0  # the map points at the left half, all the model uses
    target = torch.tensor([1])
    curves = deletion_insertion(HalfSum(), image, target, left, steps=10, patch=16, deletion="black")
    fractions = curves["fraction"]
    # 196 squares, 98 of them on the left: deleting a fraction f of all squares removes left ones first.
    deleted_left = np.minimum(np.round(fractions * 196), 98) / 98
    expected = 1 / (1 + np.exp(-8 * (1 - deleted_left)))
    assert curves["deletion"][0] == pytest.approx(expected, abs=1e-5)
    wrong_way = deletion_insertion(HalfSum(), image, target, 1 - left, steps=10, patch=16, deletion="black")
    assert curve_auc(fractions, curves["deletion"])[0] < curve_auc(fractions, wrong_way["deletion"])[0]


def test_noisy_linear_imputation_continues_the_surroundings():
    """A linear ramp is its own neighbour mean: a hole in it is filled back exactly, kept pixels untouched."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    ramp = torch.stack([xs, ys, (xs + ys) / 2]).double()
    hole = torch.zeros(64, 64, dtype=torch.bool)
    hole[16:40, 20:44] = True
    filled = noisy_linear_impute(ramp, hole, noise=0.0)
    assert torch.equal(filled[:, ~hole], ramp[:, ~hole])
    assert (filled - ramp).abs().max() < 1e-6
    # ROAD's noise: std 0.01 around the fill, on the removed pixels only.
    noisy = noisy_linear_impute(ramp, hole, noise=0.01, rng=np.random.default_rng(0))
    assert float((noisy - ramp)[:, hole].std()) == pytest.approx(0.01, rel=0.1)
    # Solved on a 2x coarser grid: close to the ramp still (bilinear upsampling of a linear fill).
    assert (noisy_linear_impute(ramp, hole, noise=0.0, factor=2) - ramp)[:, hole].abs().max() < 0.03


def test_road_deletion_fills_from_what_is_left():
    """Left half white, right half black; HalfSum reads the left half. Deleting the left squares
    first (the map's order) fills them from the black right half: p falls to sigmoid(0) at the
    midpoint. The reverse order fills the right half from the white left: p stays sigmoid(8)."""
    image = torch.zeros(1, 3, 224, 224)
    image[..., :112] = 1.0
    left = torch.zeros(1, 224, 224)
    left[..., :112] = 1.0
    target = torch.tensor([1])
    right_way = deletion_insertion(HalfSum(), image, target, left, steps=4, patch=16, deletion="road")
    wrong_way = deletion_insertion(HalfSum(), image, target, 1 - left, steps=4, patch=16, deletion="road")
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert right_way["deletion"][0, 0] == pytest.approx(sigmoid(8), abs=1e-5)
    assert right_way["deletion"][0, 2] == pytest.approx(sigmoid(0), abs=0.02)
    assert wrong_way["deletion"][0, 2] == pytest.approx(sigmoid(8), abs=0.02)
    # All removed: the image's mean colour (0.5) whatever the order.
    assert right_way["deletion"][0, 4] == pytest.approx(wrong_way["deletion"][0, 4], abs=0.02)
    assert right_way["deletion"][0, 4] == pytest.approx(sigmoid(4), abs=0.02)
    assert curve_auc(right_way["fraction"], right_way["deletion"])[0] < \
        curve_auc(wrong_way["fraction"], wrong_way["deletion"])[0] - 0.1


TINY = {
    "datasets": ["pets"],
    "explain": {"head": "logreg", "n_images": 6, "faithfulness_images": 2, "sanity_images": 1, "ig_steps": 2,
                "curve_steps": 2, "per_class": 1, "mistakes": 1, "feature_images": 1, "feature_channels": 2},
    "logreg": {"c_steps": 2},
    "embed": {"num_workers": 0, "precision": "fp32"},
}


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """The stage on 4 breeds' worth of real pets photos, trimaps for some of the test images only."""
    from stages import embed, explain, train_logreg

    root = tmp_path_factory.mktemp("repo")
    stems = {"Abyssinian": [101, 107, 108, 109, 110, 111], "Bengal": [123, 133, 135, 139, 107, 109]}
    rows = [(f"data/raw/pets/images/{label}_{n}.jpg", label, split) for label, ns in stems.items()
            for n, split in zip(ns, ["train"] * 2 + ["val"] * 2 + ["test"] * 2)]
    (root / "data/raw/pets/images").mkdir(parents=True)  # manifest paths lie under data/raw/<ds>
    for path, _, _ in rows:
        shutil.copyfile(PETS / "images" / Path(path).name, root / path)
    trimaps = root / "data/raw/pets/annotations/trimaps"
    trimaps.mkdir(parents=True)
    for path, _, _split in rows[4:6] + rows[10:11]:  # three of the four test photos
        shutil.copyfile(PETS / "annotations/trimaps" / (path.rsplit("/", 1)[1][:-4] + ".png"),
                        trimaps / (path.rsplit("/", 1)[1][:-4] + ".png"))
    prepared = root / "data/prepared/pets"
    prepared.mkdir(parents=True)
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(prepared / "manifest.csv", index=False)
    (prepared / "classes.json").write_text(json.dumps(list(stems)))
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for stage in (embed, train_logreg, explain):
            stage.main("pets")
    return root


def test_explain_stage_writes_pictures_curves_and_measured_numbers(explained):
    out = explained / "data/explain/pets"
    assert {p.name for p in out.iterdir()} >= {"feature_maps.png", "attribution_classes.png", "localisation.png",
                                               "sanity.png", "deletion_insertion.png"}
    report = json.loads((explained / "metrics/pets/explain.json").read_text())
    assert report["backbone"] == "efficientnet_lite0" and report["head"] == "logreg"
    assert report["localisation"]["n_images"] == 3
    for name in ("grad_cam", "integrated_gradients", "uniform", "centred_gaussian"):
        assert 0 <= report["localisation"][name]["pet_share"] <= 1
    assert set(report["faithfulness"]) >= {"grad_cam", "integrated_gradients", "random"}
    assert set(report["sanity"]["grad_cam"]) >= {"head", "head_last_block"}
    curve = json.loads((explained / "metrics/pets/explain_deletion.json").read_text())
    assert [row["fraction"] for row in curve] == [0.0, 0.5, 1.0]
    assert set(curve[0]) == {"fraction", "grad_cam", "integrated_gradients", "random"}
    # The metrics table's two numbers are the report's, as differences to their baselines.
    top = json.loads((explained / "metrics/pets/explain_headline.json").read_text())
    loc, faith = report["localisation"], report["faithfulness"]
    assert top["cam_pet_gain"] == loc["grad_cam"]["pet_share_minus_uniform"]
    assert top["cam_del_gain"] == pytest.approx(faith["random"]["deletion_auc"] - faith["grad_cam"]["deletion_auc"],
                                                abs=1e-4)
    # Grad-CAM's layer, named by the registry: the lite0 head's ReLU6, inside the split's tail.
    assert report["grad_cam_layer"] == "backbone.1.activation"
    # Integrated gradients' completeness, per measured image: 2 steps are far from 5%, and it says so.
    ig = report["integrated_gradients"]
    assert ig["n_images"] == len(ig["per_image"]) == report["constant_maps"]["n_images"] and ig["steps"] == 2
    errors = [row["completeness_error"] for row in ig["per_image"]]
    assert ig["n_over_tolerance"] == sum(e > 0.05 for e in errors) > 0 and not ig["mean_within_tolerance"]
    assert ig["completeness_error"] == pytest.approx(np.mean(errors), abs=1e-4)
    assert set(top) == {"cam_pet_gain", "cam_del_gain"}
    assert report["constant_maps"]["grad_cam"] == 0 and not report["sanity"]["grad_cam"]["constant_trained_maps"]


def test_constant_grad_cam_maps_are_counted_and_flagged_by_the_sanity_check():
    """A head whose every weight is negative: the predicted class's gradient is negative in every
    channel of the (non-negative, post-ReLU6) map, so Grad-CAM's ReLU leaves nothing. Such maps
    locate nothing; the report counts them and the sanity check flags the method."""
    from petprobe.params import ExplainParams
    from petprobe.probing.explain import explain_test_images

    backbone = get_backbone("efficientnet_lite0")
    net = backbone.build()
    head = nn.Linear(backbone.dim, 2)
    with torch.no_grad():
        head.weight.copy_(-torch.rand(2, backbone.dim, generator=torch.Generator().manual_seed(0)))
        head.bias.zero_()
    model = split_classifier(backbone, head, net=net)
    test = pd.DataFrame({"path": [str(PETS / "images" / f"{stem}.jpg") for stem in TRIMAP_PHOTOS[:2]],
                         "label": ["a", "b"]})
    result = explain_test_images(
        model, net, pixel_transforms(backbone), test, [None, None], np.full((2, 2), 0.5), ["a", "b"],
        cam_layer=feature_map_layer(model, backbone, net),
        cfg=ExplainParams(n_images=2, faithfulness_images=1, sanity_images=2, ig_steps=2, curve_steps=2,
                          deletion="black", sanity_threshold=0.5, per_class=0, mistakes=0, feature_images=0,
                          feature_depths=1, feature_channels=1, batch_size=4, seed=0))
    report = result.report
    assert report["constant_maps"] == {"n_images": 2, "grad_cam": 2, "integrated_gradients": 0}
    assert report["sanity"]["grad_cam"]["constant_trained_maps"] == 2 and "grad_cam" in report["sanity"]["flagged"]
    assert report["sanity"]["grad_cam"]["head"] is None and report["sanity"]["grad_cam"]["head_n_undefined"] == 2


def test_shown_captions_follow_the_head_and_flag_a_disagreeing_pixel_path():
    from petprobe.probing.explain import shown_captions

    head = np.array([[0.1, 0.9], [0.7, 0.3]])
    pixel = np.array([[0.2, 0.8], [0.4, 0.6]])  # agrees on the first image, not on the second
    first, second = shown_captions(["Cat", "Dog"], head, pixel, ["Cat", "Dog"])
    assert first == "true Cat\npred Dog p=0.90"
    assert second == "true Dog\npred Cat p=0.70\n(pixel path: Dog 0.60)"
