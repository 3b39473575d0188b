"""explain@<ds>: what backbone + head look at in test photos, drawn and measured.

Reads explain.*. Writes data/explain/<ds>/: feature_maps.png (activations at four depths),
attribution_classes.png and attribution_mistakes.png (Grad-CAM and integrated gradients over test
images of every class and the most confident mistakes), localisation.png (maps with the trimap's
pet outline, where trimaps exist), sanity.png and deletion_insertion.png; metrics/<ds>/explain.json
(localisation on trimaps against uniform and centred-Gaussian maps, deletion/insertion AUCs against
random order, the sanity check's rank correlations, integrated gradients' completeness error per
image, the count of constant maps) and metrics/<ds>/explain_{deletion,insertion}.json
(mean curves, DVC plots).
"""

from __future__ import annotations

import sys
import time

from petprobe.artefacts import Artefacts
from petprobe.device import resolve_device
from petprobe.embedding.embed import embedding_backbone
from petprobe.errors import run_stage
from petprobe.heads.trained import load_head
from petprobe.labels import align_proba
from petprobe.outputs import atomic_dir, write_json
from petprobe.params import load_params
from petprobe.probing.attribution import feature_map_layer, split_classifier
from petprobe.probing.classifier import pixel_transforms
from petprobe.probing.explain import explain_headline, explain_notes, explain_test_images
from petprobe.progress import progress
from petprobe.reporting.figures import save_figure


def main(ds: str) -> None:
    params, started = load_params(dataset=ds), time.perf_counter()
    cfg = params.explain
    artefacts = Artefacts(ds)
    manifest, _ = artefacts.read_manifest()
    backbone, _ = embedding_backbone(artefacts)
    trained = load_head(artefacts, cfg.head)
    classes = [str(c) for c in trained.classes_]
    test = manifest[manifest.split == "test"].reset_index(drop=True)
    # The head's test probabilities from the embed stage's features: which mistakes are most confident.
    proba = align_proba(trained.predict_proba(artefacts.read_split(manifest, "test")), trained.classes_, classes)
    net = backbone.build()
    model = split_classifier(backbone, trained.to_module(), net=net)

    with progress(desc=f"explain@{ds}", unit="img", leave=False) as bar:
        result = explain_test_images(
            model, net, pixel_transforms(backbone), test, [artefacts.trimap(p) for p in test.path], proba, classes,
            cam_layer=feature_map_layer(model, backbone, net),
            cfg=params.explain, device=resolve_device(),
            title=f"{ds} test, {cfg.head} on {backbone.name}", progress=bar.update)
    report = {"backbone": backbone.name, "head": cfg.head, **result.report}

    with atomic_dir(artefacts.explain) as out:
        for name, figure in result.figures.items():
            save_figure(figure, out / name)
    write_json(artefacts.explain_report, report)
    write_json(artefacts.explain_headline, explain_headline(report))
    for kind, rows in result.curves.items():
        write_json(artefacts.explain_curve(kind), rows)
    notes = explain_notes(report)
    print(f"explain@{ds}: {notes[0]}; {time.perf_counter() - started:.0f}s", file=sys.stderr)
    for note in notes[1:]:
        print(f"explain@{ds}: {note}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
