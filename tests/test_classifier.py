"""Pixel-space classifiers: the chain [0,1] image -> Normalize -> backbone -> head matches the pipeline."""

import numpy as np
import pytest
import torch

from petprobe.artefacts import Artefacts
from petprobe.backbones import get_backbone
from petprobe.data.images import load_rgb
from petprobe.device import Precision
from petprobe.embedding.embed import embed_images, embedding_backbone
from petprobe.errors import PetprobeError
from petprobe.heads.logreg import LogRegHead
from petprobe.heads.trained import load_head
from petprobe.heads.training import predict_proba
from petprobe.outputs import write_json
from petprobe.params import parse_params
from petprobe.probing.classifier import pixel_classifier, pixel_transforms
from petprobe.probing.transfer import pick_transfer_backbone


@pytest.mark.unit
def test_pixel_transforms_plus_normalize_equal_the_registry_transforms(cat_dog_images):
    backbone = get_backbone("mobilenet_v2")
    model = pixel_classifier(backbone, torch.nn.Identity(), net=torch.nn.Identity())
    image = load_rgb(cat_dog_images[0])
    pixels = pixel_transforms(backbone)(image)
    assert pixels.shape == (3, 224, 224) and 0 <= float(pixels.min()) and float(pixels.max()) <= 1
    assert torch.allclose(model(pixels[None])[0], backbone.transforms()(image), atol=1e-6)


@pytest.mark.integration
def test_pixel_classifier_gives_the_heads_probabilities_on_pipeline_embeddings(cat_dog_images, cat_dog_classifier,
                                                                              tmp_path):
    # The embed stage's path (registry transforms, embed_images) and a saved + reloaded head ...
    model, classes, images = cat_dog_classifier
    backbone = get_backbone("efficientnet_lite0")
    X = np.concatenate(list(embed_images(model.backbone, backbone.preprocessing, [str(p) for p in cat_dog_images],
                                         batch_size=4, num_workers=0, device=torch.device("cpu"),
                                         precision=Precision("fp32", None))))
    head = LogRegHead(cs=(0.1,)).fit(X, np.array(["Cat"] * 4 + ["Dog"] * 4))
    artefacts = Artefacts("catsdogs", tmp_path)
    head.save(artefacts.model("logreg"))
    trained = load_head(artefacts, "logreg")
    module, names = trained.to_module(), [str(c) for c in trained.classes_]
    # ... gives the same probabilities as the whole pixel-space classifier on [0,1] images.
    pixel = pixel_classifier(backbone, module, net=model.backbone)
    assert names == ["Cat", "Dog"]
    assert np.allclose(predict_proba(pixel, images, batch_size=16).numpy(), head.predict_proba(X), atol=1e-4)


@pytest.mark.unit
def test_embedding_backbone_checks_the_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # meta.json is rewritten below: the writer replaces only inside ./data/
    backbone = get_backbone("mobilenet_v2")
    meta = {"backbone": "mobilenet_v2", "weights": {"sha256": backbone.weights.sha256},
            "preprocessing": backbone.preprocessing.as_dict()}
    artefacts = Artefacts("pets", tmp_path)
    write_json(artefacts.embeddings_meta, meta)
    assert embedding_backbone(artefacts) == (backbone, meta)
    write_json(artefacts.embeddings_meta, {**meta, "weights": {"sha256": "0" * 64}})
    with pytest.raises(PetprobeError, match="rerun the embed stage"):
        embedding_backbone(artefacts)
    write_json(artefacts.embeddings_meta, {**meta, "preprocessing": {**meta["preprocessing"], "crop": 192}})
    with pytest.raises(PetprobeError, match="rerun the embed stage"):
        embedding_backbone(artefacts)


@pytest.mark.unit
def test_transfer_backbone_auto_picks_another_one():
    assert pick_transfer_backbone("auto", "efficientnet_lite0") == "mobilenet_v2"
    assert pick_transfer_backbone("auto", "mobilenet_v2") == "efficientnet_lite0"
    assert pick_transfer_backbone("none", "mobilenet_v2") is None
    with pytest.raises(PetprobeError, match="main backbone"):
        pick_transfer_backbone("mobilenet_v2", "mobilenet_v2")


@pytest.mark.parametrize("render, message", [
    ({"pairs": [["Dog"]]}, r"'render.pairs\[0\]' must be \[source, target\]"),
    ({"pairs": [["Dog", "Dog"]]}, "two different classes"),
    ({"eps": [0.0]}, r"'render.eps\[0\]' is 0.0; it must be in \(0, 1\]"),
    ({"imagenet_classes": [1000]}, r"must be in \[0, 1000\)"),
    ({"transfer_backbone": "resnet"}, "valid: auto, .*efficientnet_lite0, mobilenet_v2, .*none"),
    ({"head": "svm"}, "valid: head, knn, logreg"),
    ({"typo": 1}, "unknown key 'render.typo'"),
])
@pytest.mark.unit
def test_render_params_are_checked(render, message):
    with pytest.raises(PetprobeError, match=message):
        parse_params({"render": render})
