"""Names that become paths or output lines: the one rule for a dataset name, and how any name is printed.

A leaf module (it imports nothing of petprobe but its error type), so both the params schema and
the artefact layout can use it without importing each other.
"""

from __future__ import annotations

import re
import unicodedata

from petprobe.errors import PetprobeError

__all__ = ["check_dataset_name", "printable"]

# Dataset names become folder names (data/raw/<ds>, metrics/<ds>.json) and DVC stage names
# (download@<ds>): only letters, digits, '_' and '-', so no name can be '..', absolute or nested.
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_dataset_name(name, key: str = "dataset") -> str:
    """Return ``name`` if it is a safe dataset name, else raise with one line saying what is allowed."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise PetprobeError(f"{key} {name!r} is not a valid dataset name: use letters, digits, '_' and '-' "
                            "(starting with a letter or digit, at most 64 characters)")
    return name


def printable(name: str) -> str:
    """``name`` safe to print on one line of a terminal or a text output: control characters
    (newline, carriage return, escape sequences), Unicode line separators and bytes that were not
    UTF-8 (surrogate-escaped) become backslash escapes (``\\n``, ``\\x1b``, ``\\xe9``); the rest is kept.

    A file named ``a.jpg\\nb.jpg: Cat 1.000`` then prints as one line and cannot forge another.
    """
    out = []
    for ch in name:
        kind = unicodedata.category(ch)
        if kind == "Cs" and 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif kind in ("Cc", "Cs", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
