"""One error type for everything a user can get wrong, and the one way stages report it."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

__all__ = ["PetprobeError", "MAX_LINE", "one_line", "shorten", "error_line", "reports_errors", "run_stage"]

# The longest error line shown: room for two paths and a hint, short of a message that quotes a
# whole hostile value (a params.yaml anchor bomb's repr was 351 MB).
MAX_LINE = 1000


class PetprobeError(Exception):
    """A problem the user can fix (bad params, missing data, broken artefact); shown as one line."""


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary where one is near, with "…" when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary in the second half; else a very long word is cut
        cut = cut[:space]
    return cut.rstrip() + "…"


def one_line(err: BaseException, limit: int = MAX_LINE) -> str:
    """A library's error message, folded onto one line and shortened to ``limit`` characters (or its
    type, when it says nothing)."""
    text = str(err)
    text = text[:4 * limit]  # folding a huge message would copy it several times over
    return shorten(" ".join(text.split()), limit) or type(err).__name__


def error_line(err: BaseException) -> str:
    """The ``petprobe: error: ...`` line shown for ``err``: one line, at most about ``MAX_LINE`` characters."""
    return f"petprobe: error: {one_line(err)}"


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
            print(error_line(err), file=sys.stderr)
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
