"""params.yaml is validated once, against one schema, with one-line errors naming valid choices."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from petprobe.errors import PetprobeError
from petprobe.params import Params, load_params, parse_params


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def schema_keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from schema_keys(type(default), key + ".")
        else:
            yield key


def file_keys(raw, prefix=""):
    for k, v in raw.items():
        if isinstance(v, dict) and k != "imagefolders":
            yield from file_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


@pytest.mark.unit
def test_params_yaml_holds_exactly_the_schema_keys():
    # dvc exp run -S can only set keys present in the file, so every schema key must be there.
    assert sorted(file_keys(raw_params())) == sorted(schema_keys(Params))


@pytest.mark.unit
def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.backbone == "efficientnet_lite0"
    assert params.datasets == ["pets", "catsdogs"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["logreg"].update(typo=1),
         "unknown key 'logreg.typo' (valid: logreg.c_max, logreg.c_min, logreg.c_steps, logreg.cv_folds, logreg.max_iter, logreg.seed, logreg.tol)"),
        (lambda p: p.update(bakcbone="mobilenet_v2"), "unknown key 'bakcbone'"),
        (lambda p: p.update(backbone="nope"), "'backbone' is 'nope', not a known backbone (valid: convnext_tiny, efficientnet_b0, efficientnet_lite0"),
        (lambda p: p.update(datasets=["pets", "flowers"]), "'datasets[1]' is 'flowers', not a known dataset (valid: catsdogs, pets"),
        (lambda p: p.update(datasets=[]), "'datasets' must hold at least 1 entry"),
        (lambda p: p["embed"].update(batch_size="32"), "'embed.batch_size' must be int, got '32'"),
        (lambda p: p["embed"].update(batch_size=-1), "'embed.batch_size' is -1; it must be >= 0"),
        (lambda p: p["embed"].update(batch_size=True), "'embed.batch_size' must be int, got True"),
        (lambda p: p["data"].update(val_fraction=1.5), "'data.val_fraction' is 1.5; it must be < 1.0"),
        (lambda p: p["data"].update(source="ftp"), "'data.source' is 'ftp'; valid: auto, mirror, official, sample"),
        (lambda p: p.update(logreg=[1, 2]), "'logreg' must be a mapping"),
    ],
)
@pytest.mark.unit
def test_bad_params_give_one_line_naming_the_key(edit, message):
    raw = raw_params()
    edit(raw)
    with pytest.raises(PetprobeError) as err:
        parse_params(raw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.unit
def test_integer_is_accepted_where_a_float_is_expected():
    raw = raw_params()
    raw["logreg"]["c_max"] = 10
    assert parse_params(raw).logreg.c_max == 10.0


@pytest.mark.unit
def test_imagefolder_datasets_become_valid_names():
    raw = raw_params()
    raw["imagefolders"] = {"flowers": "/data/flowers"}
    raw["datasets"] = ["flowers"]
    assert parse_params(raw).datasets == ["flowers"]


@pytest.mark.integration
def test_stage_reports_one_line_and_exit_2(tmp_path):
    raw = raw_params()
    raw["backbone"] = "nope"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    run = subprocess.run([sys.executable, "-m", "stages.embed", "pets"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "petprobe: error: params.yaml: 'backbone' is 'nope', not a known backbone (valid: "
        + ", ".join(sorted(__import__("petprobe.backbones", fromlist=["x"]).list_backbones()))
        + ", or timm/<model> for any timm model with pretrained weights)"
    ]


@pytest.mark.integration
def test_stage_rejects_a_dataset_not_in_params(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    run = subprocess.run([sys.executable, "-m", "stages.prepare", "flowers"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert run.stderr.strip() == ("petprobe: error: dataset 'flowers' is not in params.yaml 'datasets' "
                                  "(valid: catsdogs, pets)")


@pytest.mark.unit
def test_the_name_index_params_checks_against_equals_the_registries():
    # params.py checks names against petprobe.catalogue, which imports no model code (so no stage's
    # DVC deps hold the registries just for a name check); the lists must be the registries' own.
    from petprobe.backbones import list_backbones
    from petprobe.catalogue import BACKBONE_NAMES, BUILTIN_DATASET_NAMES
    from petprobe.data.datasets import BUILTIN_DATASETS

    assert list(BACKBONE_NAMES) == list_backbones()
    assert list(BUILTIN_DATASET_NAMES) == sorted(BUILTIN_DATASETS)


@pytest.mark.integration
def test_validating_params_loads_no_model_code():
    run = subprocess.run([sys.executable, "-c", "import sys\nfrom petprobe.params import load_params\n"
                          "load_params()\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
                          "('torch', 'torchvision', 'numpy') or m.startswith(('petprobe.backbones', 'petprobe.data'))))"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.unit
@pytest.mark.parametrize("change,closest", [
    (lambda p: p.update(backbone="efficientnet_lite"), "; closest: efficientnet_lite0, efficientnet_b0"),
    (lambda p: p.update(backbone="resnet19"), "; closest: resnet18, resnet50"),
    (lambda p: p.update(datasets=["pets", "catsdog"]), "; closest: catsdogs"),
    (lambda p: p["render"].update(transfer_backbone="mobilenet_v3"), "; closest: mobilenet_v2, mobilenet_v3_large, mobilenet_v2_torchvision"),
])
def test_a_typo_in_a_name_fails_at_validation_naming_the_closest_names(change, closest):
    raw = raw_params()
    change(raw)
    with pytest.raises(PetprobeError) as err:
        parse_params(raw)
    assert str(err.value).endswith(closest) and "\n" not in str(err.value)
