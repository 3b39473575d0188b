"""dvc.yaml lists exactly the code and the params each stage uses, so `dvc status` never lies.

For every stage, the project modules its entry point runs (imported directly or transitively,
including the packages' ``__init__`` files, and imports inside functions) and the params keys its
``main`` reads are computed from the code with ``ast`` and compared with the stage's ``deps`` and
``params`` in dvc.yaml. A missing module means an edit to it would leave stale outputs that DVC
calls up to date; an extra one re-runs a stage for nothing. Both fail, naming the module or key.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from petprobe.params import Params

pytestmark = pytest.mark.unit

PROJECT_PACKAGES = ("petprobe", "stages")


def module_file(name: str) -> Path | None:
    """The file a project module name refers to, or None (a class, a function, another package)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` anywhere in the file may load (``from a import b`` may load ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative imports are not followed by this test; use absolute ones"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def project_files(module: str) -> set[str]:
    """Repo-relative paths of every project file that importing ``module`` executes."""
    todo, seen, files = [module], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a package's __init__ runs first
        if (path := module_file(name)) is not None:
            files.add(path.relative_to(REPO).as_posix())
            todo += imported_names(path)
    return files


def _section_type(chain: tuple[str, ...]):
    tp = Params
    for name in chain:
        fields = {f.name: f for f in dataclasses.fields(tp)} if dataclasses.is_dataclass(tp) else {}
        if name not in fields:
            return None  # a method such as check_dataset, not a key
        tp = typing.get_type_hints(tp)[name]
    return tp


def _leaf_keys(chain: tuple[str, ...]) -> set[str]:
    tp = _section_type(chain)
    if tp is None:
        return set()
    if dataclasses.is_dataclass(tp):  # a whole section handed on: every key in it counts as read
        return {".".join((*chain, f.name)) for f in dataclasses.fields(tp)}
    return {".".join(chain)}


def _chain(node: ast.AST) -> tuple[str | None, tuple[str, ...]]:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), tuple(reversed(names))


def params_read(path: Path) -> set[str]:
    """params.yaml keys a stage reads: attribute chains on ``load_params()``'s result and its aliases."""
    tree = ast.parse(path.read_text(), str(path))
    roots: dict[str, tuple[str, ...]] = {}  # variable -> the params section it holds
    alias_nodes: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                 else [(target, value)])
        for t, v in pairs:
            if not isinstance(t, ast.Name):
                continue
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "load_params":
                roots[t.id] = ()
    # Aliases of sections (``cfg = params.render``) may be defined after their root; resolve until stable.
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                         else [(target, value)])
                for t, v in pairs:
                    root, chain = _chain(v)
                    if isinstance(t, ast.Name) and root in roots and chain and t.id not in roots:
                        if dataclasses.is_dataclass(_section_type(roots[root] + chain)):
                            roots[t.id] = roots[root] + chain
                            alias_nodes.add(id(v))
                            changed = True
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner and id(node) not in alias_nodes:
            root, chain = _chain(node)
            if root in roots:
                keys |= _leaf_keys(roots[root] + chain)
    return keys


def _stages() -> list[tuple[str, dict]]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, stage.get("do", stage)) for name, stage in spec.items()]


@pytest.mark.parametrize("name,stage", _stages(), ids=[name for name, _ in _stages()])
def test_stage_deps_and_params_match_the_code(name, stage):
    # foreach stages take their dataset; a stage over all datasets (report) takes nothing.
    entry = re.fullmatch(r"python -m (stages\.\w+)( \$\{item\})?", stage["cmd"])
    assert entry, f"{name}: cmd should be `python -m stages.<name> [${{item}}]`, is {stage['cmd']!r}"
    listed = {d for d in stage.get("deps", []) if d.endswith(".py")}
    needed = project_files(entry.group(1))
    problems = [f"{name}: deps lack {m} (the stage imports it)" for m in sorted(needed - listed)]
    problems += [f"{name}: deps list {m}, which the stage does not import" for m in sorted(listed - needed)]
    read = params_read(module_file(entry.group(1)))
    declared = set(stage.get("params", []))
    problems += [f"{name}: params lack {k} (the stage reads it)" for k in sorted(read - declared)]
    problems += [f"{name}: params list {k}, which the stage does not read" for k in sorted(declared - read)]
    assert not problems, "\n".join(problems)


def test_the_analysis_sees_what_it_must():
    # Indirect imports, package __init__ files and function-level imports all count ...
    files = project_files("stages.embed")
    assert {"stages/embed.py", "petprobe/__init__.py", "petprobe/backbones/__init__.py",
            "petprobe/backbones/efficientnet_lite.py", "petprobe/fetch.py"} <= files
    assert "petprobe/reporting/figures.py" not in files
    # ... and params are read through aliases of sections and whole sections.
    assert params_read(REPO / "stages/render.py") >= {"render.eps", "logreg.c_min", "logreg.max_iter"}
    assert params_read(REPO / "stages/embed.py") == {"backbone", "embed.batch_size", "embed.num_workers",
                                                     "embed.precision"}


def _stages_listing(path: str) -> set[str]:
    """The dvc.yaml stages (a foreach stage once, for all its datasets) with ``path`` among their deps:
    those `dvc status` calls changed when the file changes, a comment appended included."""
    return {name for name, stage in _stages() if path in stage.get("deps", [])}


def test_an_edit_to_the_downloader_reruns_only_what_downloads():
    # petprobe/fetch.py downloads: the datasets' archives (download) and torchvision weights for
    # every stage that builds a backbone. Nothing else imports it.
    assert _stages_listing("petprobe/fetch.py") == {"download", "embed", "finetune", "render", "explain"}
    assert project_files("petprobe.fetch") == {"petprobe/__init__.py", "petprobe/fetch.py", "petprobe/checksums.py",
                                               "petprobe/errors.py", "petprobe/progress.py"}  # a leaf


def test_an_edit_to_a_backbone_entry_leaves_download_and_prepare_up_to_date():
    # torchvision_zoo.py holds the torchvision rows of the backbone registry; params.py checks a
    # backbone name against petprobe/catalogue.py, which imports no model code.
    for family in ("torchvision_zoo", "mobilenet", "efficientnet_lite", "registry", "weights", "__init__"):
        listing = _stages_listing(f"petprobe/backbones/{family}.py")
        assert listing == {"embed", "finetune", "render", "explain"}, (family, listing)
    for name in ("download", "prepare", "duplicates", "train_logreg", "train_head", "evaluate", "scratch", "report"):
        assert not any(f.startswith("petprobe/backbones/") for f in project_files(f"stages.{name}")), name
