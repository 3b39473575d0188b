"""Wrong params and wrong use of the stage CLIs: one clear line on stderr, exit status 2.

Every case runs the stage's real entry point in-process (cheap); a subset also runs as
``python -m stages.<stage>`` subprocesses, concurrently, to check the whole CLI contract:
stderr is exactly one line starting with ``petprobe: error:`` and nothing is written.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import REPO
from petprobe.errors import reports_errors

NO_MIRROR = "/nonexistent/petprobe-mirror"

# id -> (params.yaml text or None for no file, stage argv, fragment of the one error line)
CASES = {
    # wrong types
    "string for int": ("embed: {batch_size: '32'}", ["prepare", "pets"], "'embed.batch_size' must be int, got '32'"),
    "float for int": ("data: {seed: 1.5}", ["prepare", "pets"], "'data.seed' must be int, got 1.5"),
    "bool for int": ("embed: {batch_size: true}", ["embed", "pets"], "'embed.batch_size' must be int, got True"),
    "null for int": ("embed: {batch_size: null}", ["embed", "pets"], "'embed.batch_size' must be int, got None"),
    "string for number": ("data: {val_fraction: '0.2'}", ["prepare", "pets"], "'data.val_fraction' must be a number"),
    "string for list": ("datasets: pets", ["prepare", "pets"], "'datasets' must be a list, got 'pets'"),
    "number in list": ("datasets: [pets, 3]", ["prepare", "pets"], "'datasets[1]' must be str, got 3"),
    "scalar for section": ("data: 5", ["prepare", "pets"], "'data' must be a mapping, got 5"),
    "list for mapping": ("imagefolders: [a, b]", ["prepare", "pets"], "'imagefolders' must be a mapping"),
    "top level not a mapping": ("- pets\n- catsdogs", ["prepare", "pets"], "'top level' must be a mapping"),
    # negative, zero, out of range, not finite
    "negative batch size": ("embed: {batch_size: -1}", ["embed", "pets"], "'embed.batch_size' is -1; it must be >= 0"),
    "negative max_per_class": ("data: {max_per_class: -5}", ["prepare", "pets"], "'data.max_per_class' is -5; it must be >= 0"),
    "negative workers": ("embed: {num_workers: -1}", ["embed", "pets"], "'embed.num_workers' is -1; it must be >= 0"),
    "zero C steps": ("logreg: {c_steps: 0}", ["train_logreg", "pets"], "'logreg.c_steps' is 0; it must be >= 1"),
    "negative C": ("logreg: {c_min: -1}", ["train_logreg", "pets"], "'logreg.c_min' is -1.0; it must be > 0.0"),
    "zero fraction": ("data: {val_fraction: 0}", ["prepare", "pets"], "'data.val_fraction' is 0.0; it must be > 0.0"),
    "fraction above one": ("data: {test_fraction: 1.5}", ["prepare", "pets"], "it must be < 1.0"),
    "fractions summing to one": ("data: {val_fraction: 0.5, test_fraction: 0.5}", ["prepare", "pets"],
                                 "'data.val_fraction' + 'data.test_fraction' must be < 1"),
    "infinite C": ("logreg: {c_max: .inf}", ["train_logreg", "pets"], "'logreg.c_max' must be a finite number, got inf"),
    "nan fraction": ("data: {val_fraction: .nan}", ["prepare", "pets"], "must be a finite number, got nan"),
    "C range reversed": ("logreg: {c_min: 10, c_max: 1}", ["train_logreg", "pets"], "'logreg.c_min' must not exceed"),
    # upper bounds: a typo must not ask for thousands of processes or a billion-unit layer
    "too many workers": ("embed: {num_workers: 10000}", ["embed", "pets"], "'embed.num_workers' is 10000; it must be <= 64"),
    "huge hidden layer": ("head: {hidden: 1000000000}", ["train_head", "pets"],
                          "'head.hidden' is 1000000000; it must be <= 65536"),
    "huge batch": ("embed: {batch_size: 100000}", ["embed", "pets"], "'embed.batch_size' is 100000; it must be <= 4096"),
    # dataset names become folder names: nothing but letters, digits, '_' and '-'
    "dataset name with a path": ("datasets: [pets, ../../home]\nimagefolders: {../../home: /tmp}", ["prepare", "pets"],
                                 "'imagefolders' key '../../home' is not a valid dataset name"),
    "absolute dataset name": ("datasets: [/home/me/photos]", ["prepare", "pets"],
                              "'datasets[0]' '/home/me/photos' is not a valid dataset name"),
    # datasets
    "empty dataset list": ("datasets: []", ["prepare", "pets"], "'datasets' must hold at least 1 entry"),
    "unknown dataset": ("datasets: [pets, dogz]", ["prepare", "pets"],
                        "'datasets[1]' is 'dogz', not a known dataset (valid: catsdogs, pets;"),
    "dataset listed twice": ("datasets: [pets, pets]", ["prepare", "pets"], "'datasets' lists a name twice"),
    "stage for an unlisted dataset": ("datasets: [pets]", ["prepare", "catsdogs"],
                                      "dataset 'catsdogs' is not in params.yaml 'datasets' (valid: pets)"),
    "imagefolder shadows a built-in": ("imagefolders: {pets: /tmp}", ["prepare", "pets"], "reuses a built-in dataset name"),
    # keys and names
    "unknown key": ("embed: {batchsize: 8}", ["embed", "pets"], "unknown key 'embed.batchsize' (valid: embed.batch_size,"),
    "unknown section": ("trian: {lr: 1}", ["prepare", "pets"], "unknown key 'trian' (valid: backbone, data,"),
    "unknown backbone": ("backbone: resnet999", ["embed", "pets"], "not a known backbone (valid: convnext_tiny, efficientnet_b0, efficientnet_lite0,"),
    "bad choice": ("embed: {precision: fp8}", ["embed", "pets"], "'embed.precision' is 'fp8'; valid: auto, bf16, fp16, fp32"),
    # files and folders
    "invalid YAML": ("data: {source: [mirror}", ["prepare", "pets"], "params.yaml is not valid YAML"),
    "no params.yaml": (None, ["prepare", "pets"], "params.yaml not found; run from the repository root"),
    "missing mirror": (f"data: {{source: mirror, mirror: {NO_MIRROR}}}", ["download", "pets"],
                       f"data.source is 'mirror' but {NO_MIRROR}/oxford-iiit-pet does not exist"),
    "mirror is a file": ("data: {source: mirror, mirror: params.yaml}", ["download", "catsdogs"],
                         "but params.yaml/PetImages does not exist"),
    "missing imagefolder": ("datasets: [mine]\nimagefolders: {mine: /nonexistent/photos}", ["download", "mine"],
                            "imagefolders.mine: /nonexistent/photos is not a folder"),
    # stages run out of order
    "prepare before download": ("{}", ["prepare", "pets"], "data/raw/pets does not exist; run the download stage first"),
    "embed before prepare": ("{}", ["embed", "pets"], "data/prepared/pets/manifest.csv is missing; run the prepare stage"),
    "train before embed": ("{}", ["train_logreg", "pets"], "manifest.csv is missing; run the prepare stage first"),
    "evaluate before train": ("{}", ["evaluate", "catsdogs"], "manifest.csv is missing"),
}
if not torch.cuda.is_available():
    CASES["fp16 on CPU"] = ("embed: {precision: fp16}\ndata: {max_per_class: 1}", ["embed", "pets"],
                            "embed.precision fp16 needs a CUDA device")

# The CLI contract, checked in real subprocesses for one case of each kind (each costs ~2 s of CPU).
SUBPROCESS = ["string for int", "negative max_per_class", "empty dataset list", "unknown dataset", "missing mirror",
              "absolute dataset name",
              "embed before prepare"]


def workdir(root: Path, name: str, text: str | None) -> Path:
    work = root / name.replace(" ", "_")
    work.mkdir()
    if text is not None:
        (work / "params.yaml").write_text(text + "\n")
    if name == "fp16 on CPU":  # needs a manifest to get as far as choosing the precision
        (work / "data/prepared/pets").mkdir(parents=True)
        (work / "data/prepared/pets/manifest.csv").write_text("path,label,split\n")
        (work / "data/prepared/pets/classes.json").write_text("[]\n")
    return work


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_params_give_one_clear_line(case, tmp_path, monkeypatch, capsys):
    text, (stage, ds), expected = CASES[case]
    work = workdir(tmp_path, case, text)
    monkeypatch.chdir(work)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    main = importlib.import_module(f"stages.{stage}").main
    with pytest.raises(SystemExit) as exit_info:
        reports_errors(main)(ds)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "\r" not in line and line.strip()]  # tqdm bars use \r
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("petprobe: error: "), err
    assert expected in lines[0]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before  # nothing written


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Run the SUBPROCESS cases concurrently (real interpreter start-up is the slow part)."""
    root = tmp_path_factory.mktemp("cli")

    def run(case):
        text, argv, _ = CASES[case]
        work = workdir(root, case, text)
        result = subprocess.run([sys.executable, "-m", f"stages.{argv[0]}", *argv[1:]], cwd=work, capture_output=True,
                                text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
        return case, result, sorted(p.name for p in work.iterdir())

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {case: (result, files) for case, result, files in pool.map(run, SUBPROCESS)}


@pytest.mark.integration
@pytest.mark.parametrize("case", SUBPROCESS)
def test_stage_cli_prints_exactly_one_error_line(case, cli_results):
    result, files = cli_results[case]
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("petprobe: error: ") and CASES[case][2] in result.stderr
    assert files == ["params.yaml"]  # no data/ folder, no temp files


@pytest.mark.integration
def test_stage_without_its_dataset_argument_is_a_usage_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr == "petprobe: error: usage: python -m stages.prepare <dataset>\n"
