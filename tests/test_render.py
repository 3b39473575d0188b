"""The render stage end to end on 12 real photos, with tiny settings: embed, train_logreg, render."""

import json

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import PETIMAGES

pytestmark = pytest.mark.integration

TINY = {
    "datasets": ["catsdogs"],
    "render": {"image_size": 32, "steps": 2, "n_images": 2, "eps": [4 / 255, 8 / 255], "pgd_steps": 1,
               "unbounded_steps": 2, "transfer_per_class": 2, "grid_images": 1, "head": "logreg",
               "imagenet_classes": [340]},
    "logreg": {"c_steps": 2},
    "head": {"hidden": 0, "max_epochs": 2, "patience": 1},
    "embed": {"num_workers": 0, "precision": "fp32"},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from stages import embed, render, train_head, train_logreg

    root = tmp_path_factory.mktemp("repo")
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/catsdogs").symlink_to(PETIMAGES)  # manifest paths lie under data/raw/<ds>
    rows = [(f"data/raw/catsdogs/{label}/{n}.jpg", label, split)
            for label in ("Cat", "Dog") for n, split in zip(range(1, 7), ["train"] * 2 + ["val"] * 2 + ["test"] * 2)]
    prepared = root / "data/prepared/catsdogs"
    prepared.mkdir(parents=True)
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(prepared / "manifest.csv", index=False)
    (prepared / "classes.json").write_text(json.dumps(["Cat", "Dog"]))
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for stage in (embed, train_logreg, train_head, render):
            stage.main("catsdogs")
    return root


def test_render_writes_grids_metrics_and_the_eps_curve(rendered):
    out = rendered / "data/render/catsdogs"
    assert sorted(p.name for p in out.iterdir()) == ["attack_Cat_to_Dog.png", "attack_Dog_to_Cat.png", "ideal.png"]
    with Image.open(out / "ideal.png") as im:
        assert im.format == "PNG" and im.width > 2 * 224  # two classes (Cat, Dog) side by side
    report = json.loads((rendered / "metrics/catsdogs/render.json").read_text())
    assert report["backbone"] == "efficientnet_lite0" and report["head"] == "logreg"
    assert set(report["ideal"]) == {"pixel", "fourier", "imagenet_pixel", "imagenet_fourier"}
    assert set(report["ideal"]["pixel"]) == {"Cat", "Dog"}
    # Beyond the optimised image and model: its own transforms redrawn, a held-out transform family,
    # the other head, another backbone (as it is and under the held-out draws).
    assert set(report["ideal"]["pixel"]["Cat"]) == {
        "p_target_optimised", "p_target_optimisation_transforms", "p_target_heldout_transforms",
        "p_target_head_head", "p_target_head_head_heldout_transforms", "p_target_mobilenet_v2",
        "p_target_mobilenet_v2_heldout_transforms"}
    assert set(report["ideal"]["imagenet_fourier"]["340 zebra"]) == {
        "p_target_optimised", "p_target_optimisation_transforms", "p_target_heldout_transforms"}
    assert all(0 <= p <= 1 for p in report["ideal"]["pixel"]["Dog"].values())
    assert list(report["ideal"]["imagenet_fourier"]) == ["340 zebra"]
    assert report["attacks"]["config"]["pgd_8"] == \
        "PGD(eps=0.031373, alpha=0.007843, steps=1, random_start=True, seed=0)"
    assert report["attacks"]["transfer_backbone"] == "mobilenet_v2"
    pair = report["attacks"]["Dog_to_Cat"]
    assert set(pair) == {"n_images", "transfer_clean_accuracy", "transfer_n_clean_correct", "pgd_4", "pgd_8",
                         "unbounded"}
    assert set(pair["pgd_8"]) == {"success", "p_target", "linf", "l2", "png_model_input_success",
                                  "png_model_input_p_target", "png_via_predict_success", "png_via_predict_p_target",
                                  "transfer_success_of_clean_correct", "transfer_n_clean_correct",
                                  "transfer_success_of_whitebox_success", "transfer_n_whitebox_success"}
    assert pair["pgd_8"]["transfer_n_clean_correct"] == pair["transfer_n_clean_correct"] <= pair["n_images"]
    assert pair["pgd_8"]["transfer_n_whitebox_success"] <= pair["transfer_n_clean_correct"]
    assert pair["pgd_8"]["linf"] == pytest.approx(8 / 255, abs=1e-6)
    curve = json.loads((rendered / "metrics/catsdogs/render_eps.json").read_text())
    assert [row["eps_255"] for row in curve] == [4, 8]
    # The few numbers `dvc metrics show` carries come from the same pooled rows and ideal images.
    top = json.loads((rendered / "metrics/catsdogs/render_headline.json").read_text())
    assert top["pgd4_success"] == curve[0]["success"]
    assert top["pgd4_transfer"] == curve[0]["transfer_success_of_clean_correct"]
    # Their means over the dataset's classes' images (pixel and Fourier), as render.json lists them.
    assert set(top) == {"pgd4_success", "pgd4_transfer", "ideal_p_heldout"}
    for measure in ("p_target_heldout_transforms", "p_target_mobilenet_v2", "p_target_optimisation_transforms"):
        values = [p[measure] for kind in ("pixel", "fourier") for p in report["ideal"][kind].values()]
        assert report["ideal_summary"][measure]["mean"] == pytest.approx(sum(values) / len(values), abs=1e-6)
        assert report["ideal_summary"][measure]["n_images"] == len(values) == 4
    assert top["ideal_p_heldout"] == report["ideal_summary"]["p_target_heldout_transforms"]["mean"]
    assert report["ideal_summary"]["chance"] == 0.5
    assert all(0 <= row["success"] <= 1 and row["n_images"] >= 1 for row in curve)


def test_train_logreg_records_each_rows_iterations_and_convergence(rendered):
    # The fixture's train_logreg ran on 2 C (logreg.c_steps = 2: 1e-6 and 1e5).
    search = json.loads((rendered / "metrics/catsdogs/logreg_search.json").read_text())
    assert [set(row) >= {"log10_C", "n_iter", "converged", "chosen"} for row in search["path"]] == [True, True]
    chosen = [row for row in search["path"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["converged"] and chosen[0]["C"] == search["C"]
    assert search["n_C_not_converged"] == sum(not row["converged"] for row in search["path"])
    assert search["refit_converged"] is True and search["refit_n_iter"] >= 1
