"""Embeddings from the real offline backbones: right shape, deterministic, semantically sane."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petprobe.backbones import get_backbone, list_backbones
from petprobe.device import Precision
from petprobe.embedding.embed import embed_images

FP32 = Precision("fp32", None)


def embed(name, paths, precision=FP32, batch_size=3):
    backbone = get_backbone(name)
    return np.concatenate(list(embed_images(backbone.build(), backbone.preprocessing, [str(p) for p in paths],
                                            batch_size=batch_size, num_workers=0, device=torch.device("cpu"),
                                            precision=precision)))


@pytest.mark.integration
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_embeddings_have_the_right_shape_and_repeat_exactly(name, cat_dog_images):
    first = embed(name, cat_dog_images)
    second = embed(name, cat_dog_images, batch_size=8)  # batching must not change a row
    assert first.shape == (8, 1280) and first.dtype == np.float32
    assert np.isfinite(first).all() and (np.abs(first).sum(axis=1) > 0).all()
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(first, embed(name, cat_dog_images))


@pytest.mark.unit
@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_real_weights_put_cats_nearer_cats_than_dogs(name, cat_dog_images):
    e = embed(name, cat_dog_images)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    cats, dogs = slice(0, 4), slice(4, 8)
    within = (sim[cats, cats].sum() - 4 + sim[dogs, dogs].sum() - 4) / 24
    between = sim[cats, dogs].mean()
    assert within > between + 0.05, (within, between)


@pytest.mark.unit
def test_efficientnet_lite0_classifier_recognises_a_cat(cat_dog_images):
    from torchvision.models import get_model_weights

    categories = get_model_weights("mobilenet_v2").DEFAULT.meta["categories"]
    backbone = get_backbone("efficientnet_lite0")
    model = backbone.build()
    from petprobe.data.images import load_rgb

    x = backbone.transforms()(load_rgb(cat_dog_images[0]))[None]
    with torch.inference_mode():
        top5 = model.classify(x).softmax(1)[0].topk(5).indices.tolist()
    # ImageNet indices 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian).
    assert top5[0] in range(281, 286), [categories[i] for i in top5]


@pytest.mark.unit
def test_registry_is_sorted_and_offline_backbones_verify_their_weights():
    names = list_backbones()
    assert names == sorted(names) and {"efficientnet_lite0", "mobilenet_v2"} <= set(names)
    for name in ("efficientnet_lite0", "mobilenet_v2"):
        assert get_backbone(name).weights.available()
