"""The head registry is the one source of the heads' names, files and choices; C_at_grid_edge has one encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petprobe.artefacts import Artefacts
from petprobe.catalogue import COMPARISONS, DEFAULT, HEADS, TRAINED
from petprobe.cli import build_parser
from petprobe.errors import PetprobeError
from petprobe.heads.logreg import GRID_EDGES, LogRegHead, recorded_grid_edge, search_record
from petprobe.params import parse_params

pytestmark = pytest.mark.unit

CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def test_choices_and_files_come_from_the_registry(tmp_path):
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    model = next(a for a in predict._actions if a.dest == "model")
    assert tuple(model.choices) == TRAINED == ("logreg", "head", "knn") and model.default == DEFAULT == "head"
    artefacts = Artefacts("pets", tmp_path)
    assert {name: artefacts.model(name).name for name in TRAINED} == {"logreg": "logreg.npz", "head": "head.pt",
                                                                         "knn": "knn.npz"}
    for name in COMPARISONS:  # no saved model: refused, naming the valid ones
        with pytest.raises(PetprobeError, match=r"unknown model .* \(valid: head, knn, logreg\)"):
            artefacts.model(name)
    assert list(HEADS) == ["logreg", "head", "knn", "finetune", "scratch"]
    assert parse_params({"render": {"head": "logreg"}}).render.head == "logreg"
    with pytest.raises(PetprobeError, match="explain.head"):
        parse_params({"explain": {"head": "finetune"}})


def test_grid_edge_is_recorded_once_and_read_back_as_recorded(tmp_path):
    # Labels unrelated to the features: the most regularised C wins, the low edge of the grid.
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 30)), np.repeat(["Cat", "Dog"], 30)
    head = LogRegHead(cs=CS, cv_folds=3).fit(X, y)
    record = search_record(head)
    assert head.C_ == CS[0] and head.C_at_grid_edge_ == record["C_at_grid_edge"] == "low" in GRID_EDGES
    assert record["n_C_not_converged"] == sum(not row["converged"] for row in record["path"]) == 0
    assert [row["chosen"] for row in record["path"]] == [True] + [False] * (len(CS) - 1)
    artefacts = Artefacts("pets", tmp_path)
    artefacts.logreg_search.parent.mkdir(parents=True)
    artefacts.logreg_search.write_text(json.dumps(record))
    assert recorded_grid_edge(artefacts) == "low"
    artefacts.logreg_search.write_text(json.dumps({**record, "C_at_grid_edge": False}))  # the old encoding
    with pytest.raises(PetprobeError, match="C_at_grid_edge is false, not one of no, low, high; rerun train_logreg"):
        recorded_grid_edge(artefacts)
