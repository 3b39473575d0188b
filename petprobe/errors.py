"""One error type for everything a user can get wrong, and the one way stages report it."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

__all__ = ["PetprobeError", "one_line", "reports_errors", "run_stage"]


class PetprobeError(Exception):
    """A problem the user can fix (bad params, missing data, broken artefact); shown as one line."""


def one_line(err: BaseException) -> str:
    """A library's error message, folded onto one line (or its type, when it says nothing)."""
    return " ".join(str(err).split()) or type(err).__name__


def reports_errors(main):
    """Turn a PetprobeError raised by ``main`` into one line on stderr and exit status 2
    (Ctrl-C: one line and the shell's status 130, no traceback).

    DVC shows a failed stage's stderr, so the line is what a user of ``dvc repro`` or
    ``dvc exp run -S ...`` sees instead of a traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PetprobeError as err:
            print(f"petprobe: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            # Ctrl-C is not a crash: outs are written atomically, so there is nothing to clean up.
            print("petprobe: interrupted; no half-written outputs were left, rerun to finish", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def run_stage(main) -> None:
    """Entry point of ``python -m stages.<stage> <dataset>``: check argv, run, report errors."""
    args = sys.argv[1:]
    if len(args) != 1:
        print(f"petprobe: error: usage: python -m stages.{Path(sys.argv[0]).stem} <dataset>", file=sys.stderr)
        raise SystemExit(2)
    reports_errors(main)(args[0])
