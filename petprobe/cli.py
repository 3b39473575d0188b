"""``petprobe``: the command line (console script declared in pyproject.toml).

One function per subcommand; each takes the parsed arguments and returns the exit status.
A PetprobeError (no trained model, bad argument) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from petprobe import __version__
from petprobe.catalogue import DEFAULT, HEADS, TRAINED
from petprobe.errors import PetprobeError, error_line, shorten
from petprobe.names import printable

__all__ = ["main", "build_parser", "predict_command", "backbones_command"]


def predict_command(args: argparse.Namespace) -> int:
    """Print the top-k classes of every image; 1 if any file could not be classified."""
    from petprobe.artefacts import Artefacts
    from petprobe.predict import Predictor, image_files  # imports torch: only for this subcommand

    if args.top_k < 1:
        raise PetprobeError("--top-k must be at least 1")
    root = Artefacts.find_root(args.repo if args.repo is not None else Path.cwd())
    if args.repo is not None and root != Path(args.repo).resolve():
        raise PetprobeError(f"--repo {args.repo}: no dvc.yaml and params.yaml there")
    predictor = Predictor.for_dataset(args.dataset, args.model, root=root)
    results = predictor.predict(image_files(args.paths), top_k=args.top_k)
    # File and class names are escaped (printable): a name holding a newline cannot forge a line.
    for result in results:
        if result.error is not None:
            print(f"petprobe: error: {printable(result.path)}: {shorten(printable(result.error))}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            if result.error is None:
                print(f"{printable(result.path)}: " + ", ".join(f"{printable(name)} {p:.3f}"
                                                                for name, p in result.classes))
    return 1 if any(r.error is not None for r in results) else 0


def backbones_command(args: argparse.Namespace) -> int:
    """Print every registered backbone: name, embedding dim, ImageNet acc@1, parameters, weights, offline."""
    import torch

    from petprobe.backbones import get_backbone, list_backbones
    from petprobe.backbones.timm_family import cached_timm_weights, hf_cache_dir

    rows = [("name", "dim", "acc@1", "params", "weights", "offline")]
    for name in list_backbones():
        backbone = get_backbone(name)
        weights = backbone.weights
        acc, n_params = backbone.meta_value("acc@1"), backbone.meta_value("num_params")
        rows.append((name, str(backbone.dim), f"{acc:.1f}" if acc else "-", f"{n_params / 1e6:.1f}M" if n_params else "-",
                     weights.label, "yes" if weights.available() else f"no: {weights.missing_hint}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print("\nacc@1: top-1 % on ImageNet-1k val as published for the weights (- where none is); params: with the "
          "ImageNet classifier where it has one")
    print(f"torchvision weights: looked up in {torch.hub.get_dir()}/checkpoints (TORCH_HOME/hub/checkpoints), "
          "downloaded there on first use when the network allows")
    cached = cached_timm_weights()
    print(f"\nany timm/<name>: a timm model with pretrained weights (timm.list_models(pretrained=True)), e.g. "
          f"timm/convnext_tiny.fb_in22k; weights from the Hugging Face cache {hf_cache_dir()}, downloaded there on "
          f"first use; cached now: {', '.join(cached) if cached else 'none'}")
    return 0


def study_command(args: argparse.Namespace) -> int:
    """Compare backbones: one DVC experiment per backbone (up to evaluate@<ds>), then a table and two figures."""
    from petprobe.artefacts import Artefacts
    from petprobe.backbones import get_backbone, list_backbones
    from petprobe.data.sample import SAMPLE_DIR
    from petprobe.params import load_params
    from petprobe.reporting.study import measure_throughput, read_study, run_study, study_table
    from petprobe.reporting.study_files import study_note, write_study

    repo = Path(".")
    if not (repo / "dvc.yaml").is_file():
        raise PetprobeError("petprobe study runs in the repository root (no dvc.yaml here)")
    params = load_params(repo / "params.yaml")
    backbones = args.backbones or [n for n in list_backbones() if get_backbone(n).weights.available()]
    for name in backbones:
        get_backbone(name)  # an unknown name stops here, in one line, before any experiment
    if not args.compare_only:
        run_study(backbones, list(params.datasets), repo=repo, jobs=args.jobs,
                  log=lambda line: print(line, file=sys.stderr))
    runs = [r for r in read_study(repo) if r.backbone in backbones or not args.backbones]
    if not runs:
        raise PetprobeError("no study experiments at this commit; run `petprobe study` without --compare-only")
    photos = sorted(str(p) for p in SAMPLE_DIR.rglob("*.jpg"))[:args.throughput_images]
    throughput = {r.backbone: measure_throughput(r.backbone, photos) for r in runs} if photos else {}
    table = study_table(runs, throughput)
    written = write_study(table, Path(args.out), len(photos))
    print(table.drop(columns=["experiment"]).round(3).to_string(index=False))
    print(f"\n{study_note(len(photos))}\nwritten: {', '.join(map(str, written))}")
    if Path(args.out).resolve() == Artefacts.study_dir().resolve() and Artefacts.report_page().is_file():
        # The report page shows the study: re-render that page only (not the stages before it).
        subprocess.run(["dvc", "repro", "--single-item", "report"], check=True)
        print(f"report: {Artefacts.report_page()} (section Backbone study)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petprobe", description="Frozen pretrained backbones + cheap heads.")
    parser.add_argument("--version", action="version", version=f"petprobe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict", help="classify image files with a trained pipeline",
        description="Classify images with the backbone and head trained by `dvc repro` "
                    "(data/embeddings/<ds>/meta.json names the backbone). The repository is found from the "
                    "current folder upward, or given with --repo.")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    predict.add_argument("--dataset", required=True, help="the dataset whose trained model to use, e.g. pets")
    predict.add_argument("--model", choices=TRAINED, default=DEFAULT,
                         help=f"{' or '.join(HEADS[name].label for name in TRAINED)} (default: {DEFAULT})")
    predict.add_argument("--repo", metavar="DIR",
                         help="the petprobe repository (default: the current folder or the nearest one above it)")
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    predict.set_defaults(func=predict_command)

    commands.add_parser("backbones", help="list the backbones, their weights and whether they work offline",
                        description=backbones_command.__doc__).set_defaults(func=backbones_command)

    study = commands.add_parser(
        "study", help="compare backbones on the datasets: one DVC experiment each, one table, two figures",
        description="Runs `dvc exp run --temp -S backbone=<name> evaluate@<ds>...` as experiment study-<name> for "
                    "each backbone that has none at this commit (so adding one computes only that one; embeddings "
                    "are DVC-cached), then compares every study experiment: metrics/study/study.{csv,md} and plots "
                    "of probe accuracy against ImageNet top-1 and against throughput. Run it in the repository "
                    "root, after a git commit (DVC experiments need one).")
    study.add_argument("backbones", nargs="*", metavar="BACKBONE",
                       help="registered names or timm/<model> (default: every backbone whose weights are here)")
    study.add_argument("--jobs", type=int, default=1,
                       help="parallel queue workers (dvc queue start -j N); 1 runs them one by one (default)")
    study.add_argument("--compare-only", action="store_true", help="only compare the experiments already run")
    study.add_argument("--throughput-images", type=int, default=32,
                       help="sample photos timed per backbone (0: no timing; default 32)")
    study.add_argument("--out", default="metrics/study",
                       help="output folder (default metrics/study, which the report page shows)")
    study.set_defaults(func=study_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PetprobeError as err:
        print(error_line(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
