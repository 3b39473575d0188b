"""Killing ``embed`` half-way (Ctrl-C and SIGKILL) in a copy of the repo, on 20 real photos.

The test waits until the embeddings file being written is really half-filled (some rows written,
some still zero), then interrupts. Afterwards no later stage can read a half-written file, stale
temp folders are cleaned up by the next run, and the rerun gives bit-identical embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import image_folder_repo

pytestmark = pytest.mark.integration

SPLITS = ("train", "val", "test")


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_embeddings(folder: Path) -> dict:
    return {**{s: np.load(folder / f"{s}.npy") for s in SPLITS}, "meta": json.loads((folder / "meta.json").read_text())}


def assert_identical(a: dict, b: dict) -> None:
    assert a["meta"] == b["meta"]
    for split in SPLITS:
        assert a[split].dtype == b[split].dtype and np.array_equal(a[split], b[split]), split


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repo copy with a 20-photo image-folder dataset, prepared and embedded once (the reference)."""
    repo = image_folder_repo(tmp_path_factory.mktemp("interrupt"), per_class=10,
                             params="embed: {batch_size: 2, num_workers: 1, precision: fp32}\n")
    run(repo, "stages.download", "tiny")
    run(repo, "stages.prepare", "tiny")
    run(repo, "stages.embed", "tiny")
    return repo, read_embeddings(repo / "data/embeddings/tiny")


def start_embed(repo: Path, log: Path) -> subprocess.Popen:
    # A session of its own, like a job in a shell: Ctrl-C reaches its whole process group.
    # SIGINT back to its default: a test run started in the background of a non-interactive shell
    # inherits it ignored, and Python then installs no KeyboardInterrupt handler.
    return subprocess.Popen([sys.executable, "-m", "stages.embed", "tiny"], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def rows_written(npy: Path) -> tuple[int, int] | None:
    """(rows on disk, rows the header promises) of an .npy that the embed stage appends to."""
    try:
        with open(npy, "rb") as fh:
            np.lib.format.read_magic(fh)
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            body = npy.stat().st_size - fh.tell()
    except (OSError, ValueError, EOFError):
        return None  # the header is still being written
    return body // (dtype.itemsize * shape[1]), shape[0]


def wait_until_half_written(proc: subprocess.Popen, embeddings: Path, log: Path) -> Path:
    """The temp train.npy once some of its rows, at most half, are written."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"embed ended (rc {proc.returncode}) before it was interrupted: {log.read_text()[-2000:]}")
        for npy in embeddings.glob(".tmp-tiny.*/train.npy"):
            written = rows_written(npy)
            # At most half: near the end the rows may all be computed and only the write buffer
            # or the commit left, and a signal then can land after the stage has finished.
            if written and 0 < written[0] <= written[1] // 2:
                return npy
        time.sleep(0.005)
    raise AssertionError("embed never reached the middle of the train split")


def stop_group(proc: subprocess.Popen) -> None:
    """Reap the process and any DataLoader worker it left behind (its own process group only)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def test_ctrl_c_keeps_the_previous_outputs_whole_and_leaves_no_temp(repo, tmp_path):
    repo, reference = repo
    embeddings = repo / "data/embeddings"
    log = tmp_path / "embed.log"
    proc = start_embed(repo, log)
    try:
        wait_until_half_written(proc, embeddings, log)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(60) == 130
    finally:
        stop_group(proc)
    err = log.read_text()
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1].endswith("petprobe: interrupted; no half-written outputs were left, rerun to finish")
    assert sorted(p.name for p in embeddings.iterdir()) == ["tiny"]  # the temp folder went with Ctrl-C
    assert_identical(read_embeddings(embeddings / "tiny"), reference)  # the earlier, whole result is untouched


def test_sigkill_leaves_nothing_readable_and_the_rerun_matches(repo, tmp_path):
    repo, reference = repo
    embeddings = repo / "data/embeddings"
    shutil.rmtree(embeddings / "tiny")  # as dvc repro does before it runs a changed stage
    log = tmp_path / "embed.log"
    proc = start_embed(repo, log)
    try:
        half = wait_until_half_written(proc, embeddings, log)
        os.kill(proc.pid, signal.SIGKILL)  # the OOM killer: no handler, no finally blocks
        proc.wait(60)
    finally:
        stop_group(proc)

    # The half-written array exists only under a temp name; the out itself does not exist.
    assert not (embeddings / "tiny").exists()
    written, promised = rows_written(half)
    assert written < promised  # rows are appended as computed: the file stops short of its header's shape
    with pytest.raises(ValueError):
        np.load(half)  # and numpy refuses it
    later = run(repo, "stages.train_logreg", "tiny", check=False)
    assert later.returncode == 2
    assert later.stderr == "petprobe: error: data/embeddings/tiny/meta.json is missing; run the embed stage\n"

    run(repo, "stages.embed", "tiny")
    assert sorted(p.name for p in embeddings.iterdir()) == ["tiny"]  # the stale temp folder was removed
    assert_identical(read_embeddings(embeddings / "tiny"), reference)
    run(repo, "stages.train_logreg", "tiny")  # and the pipeline carries on from it


def test_tampered_head_file_stops_evaluate_with_one_line_and_runs_no_code(repo, tmp_path):
    repo, _ = repo
    if not (repo / "data/models/tiny/logreg.npz").exists():
        run(repo, "stages.train_logreg", "tiny")
    head = repo / "data/models/tiny/logreg.npz"
    with np.load(head) as f:
        arrays = {k: f[k] for k in f.files}
    marker = tmp_path / "CODE-RAN"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays["classes"] = np.array([Payload(), Payload()], dtype=object)
    with open(head, "wb") as fh:
        np.savez(fh, **arrays)
    result = run(repo, "stages.evaluate", "tiny", check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("petprobe: error: data/models/tiny/logreg.npz is not a valid logistic-regression file")
    assert not marker.exists()


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from petprobe.outputs import atomic_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = os.getppid()  # pytest's parent: certainly running
    names = {
        f".tmp-emb.{dead.pid}.k1l2m3n4": False,  # killed writer: removed
        f".old-emb.{dead.pid}.k1l2m3n4": False,  # killed between the two renames: removed
        f".tmp-emb.{alive}.a1b2c3d4": True,  # a live writer's work in progress: kept
        f".tmp-emb.v2.{dead.pid}.a1b2c3d4": True,  # the temp of another out, "emb.v2": kept
        ".tmp-emb.notapid": True,  # not a name this module makes: kept
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.npy").write_bytes(b"half")
    with atomic_dir(tmp_path / "emb") as tmp:
        (tmp / "meta.json").write_text("{}")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"emb", *(n for n, keep in names.items() if keep)}
