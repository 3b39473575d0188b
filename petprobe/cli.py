"""``petprobe``: the command line (console script declared in pyproject.toml).

One function per subcommand; each takes the parsed arguments and returns the exit status.
A PetprobeError (no trained model, bad argument) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
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
