"""What train_head and evaluate write: DVCLive curves and PNG grids, identical on rerun."""

import numpy as np
import pytest
import torch

from conftest import PETIMAGES
from petprobe.backbones import get_backbone
from petprobe.data.images import load_rgb
from petprobe.errors import PetprobeError
from petprobe.probing.sheets import amplify, attack_sheet
from petprobe.reporting.curves import write_curves
from petprobe.reporting.figures import DPI, MIN_WIDTH, misclassified_grid, save_figure

HISTORY = [{"epoch": e, "lr": 1e-3, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e,
            "val_loss": abs(e - 3) + 0.5, "val_accuracy": 0.5 + 0.1 * e} for e in range(1, 6)]


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_training_curves_are_dvclive_files_identical_on_rerun(tmp_path):
    write_curves(tmp_path / "a", HISTORY, best_epoch=3, title="test")
    write_curves(tmp_path / "b", HISTORY, best_epoch=3, title="test")
    a = files(tmp_path / "a")
    assert set(a) == {"metrics.json", "plots/images/curves.png", "plots/metrics/train/loss.tsv",
                      "plots/metrics/train/accuracy.tsv", "plots/metrics/val/loss.tsv",
                      "plots/metrics/val/accuracy.tsv"}
    assert a == files(tmp_path / "b")  # no timestamps
    assert a["plots/metrics/val/loss.tsv"].decode().splitlines()[:2] == ["step\tloss", "1\t2.5"]
    assert b'"best_epoch": 3' in a["metrics.json"] and b'"val_loss": 0.5' in a["metrics.json"]


@pytest.mark.unit
def test_misclassified_grid_shows_the_most_confident_mistakes_first(tmp_path):
    paths = [str(PETIMAGES / "Cat" / f"{n}.jpg") for n in (1, 2, 3, 4)]
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.1, 0.9], [0.4, 0.6]])  # all true "Cat"
    fig = misclassified_grid(paths, ["Cat"] * 4, proba, ["Cat", "Dog"], limit=2, title="t")
    captions = [ax.get_title() for ax in fig.axes]
    assert captions == ["true Cat (0.10)\npred Dog (0.90)", "true Cat (0.30)\npred Dog (0.70)"]
    save_figure(fig, tmp_path / "a.png")
    save_figure(misclassified_grid(paths, ["Cat"] * 4, proba, ["Cat", "Dog"], limit=2, title="t"), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert load_rgb(tmp_path / "a.png").size[0] > 200  # a real picture, not an empty canvas


@pytest.mark.integration
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_split_last_block_recomposes_the_backbone(name):
    backbone = get_backbone(name)
    model = backbone.build()
    x = torch.stack([backbone.transforms()(load_rgb(PETIMAGES / "Dog" / f"{n}.jpg")) for n in (1, 2)])
    trunk, tail = backbone.split_last_block(model)
    with torch.no_grad():
        assert torch.allclose(tail(trunk(x)), model(x), atol=1e-5)
    assert 0 < sum(p.numel() for p in tail.parameters()) < sum(p.numel() for p in model.parameters()) / 2


@pytest.mark.integration
@pytest.mark.parametrize("name,architecture", [("resnet18", "resnet18"), ("efficientnet_b0", "efficientnet_b0"),
                                               ("convnext_tiny", "convnext_tiny"),
                                               ("mobilenet_v3_large", "mobilenet_v3_large"),
                                               ("mobilenet_v2_torchvision", "mobilenet_v2")])
def test_torchvision_last_block_split_recomposes_the_network(name, architecture):
    # Their weights are not here offline: the registry's own builder runs on a randomly initialised
    # state_dict of the same architecture, which is all the split's correctness depends on.
    from torchvision.models import get_model

    backbone = get_backbone(name)
    torch.manual_seed(0)
    model = backbone.builder(get_model(architecture, weights=None).state_dict()).eval()
    x = torch.rand(2, 3, 96, 96)
    trunk, tail = backbone.split_last_block(model)
    with torch.no_grad():
        assert torch.allclose(tail(trunk(x)), model(x), atol=1e-5)
        assert backbone.imagenet_head(model)(model(x)).shape == (2, 1000)  # the ImageNet classifier is kept
    assert 0 < sum(p.numel() for p in tail.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.unit
def test_vgg16_has_no_last_block_split():
    with pytest.raises(PetprobeError, match="no last-block split"):
        get_backbone("vgg16").split_last_block(torch.nn.Identity())


@pytest.mark.unit
def test_a_one_tile_grid_keeps_its_whole_title(tmp_path):
    title = "catsdogs test, logreg: most confident mistakes (a title of some length)"
    fig = misclassified_grid([str(PETIMAGES / "Cat" / "1.jpg")], ["Cat"], np.array([[0.2, 0.8]]), ["Cat", "Dog"],
                             limit=16, title=title)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert fig.get_figwidth() >= MIN_WIDTH
    assert 0 <= box.x0 and box.x1 <= fig.get_figwidth() * DPI  # not cut on either side


@pytest.mark.unit
def test_attack_sheet_amplifies_every_perturbation_alike_in_at_most_six_columns():
    images = torch.full((1, 3, 8, 8), 0.5)
    steps = {f"pgd_{e}": e / 255 for e in (1, 2, 4, 8)}
    adversarial = {name: images + eps for name, eps in steps.items()}
    adversarial["unbounded"] = images + 40 / 255
    p = torch.tensor([[0.9, 0.1]])
    sheet = attack_sheet(images, adversarial, p, {k: p for k in adversarial}, ["Cat", "Dog"], "Cat", "Dog")
    cell, pad = 224, 4
    assert sheet.size[0] == 6 * (cell + pad) + pad  # original + 5 attacks
    # Second row: the perturbations, one factor (x15 maps 8/255 to nearly full range) for all of them.
    row_y = sheet.size[1] - pad - (cell + 2 * 14 + 8) + cell // 2
    greys = [sheet.getpixel((pad + c * (cell + pad) + cell // 2, row_y))[0] for c in range(1, 6)]
    expected = [int(round(float(amplify(torch.tensor(e / 255), 15)) * 255)) for e in (1, 2, 4, 8, 40)]
    assert greys == pytest.approx(expected, abs=1)
    assert greys[0] < greys[1] < greys[2] < greys[3] and greys[4] == 255  # 1/255 looks smaller than 8/255
