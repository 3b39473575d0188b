"""Names that become paths: the one rule for a dataset name.

A leaf module (it imports nothing of petprobe but its error type), so both the params schema and
the artefact layout can use it without importing each other.
"""

from __future__ import annotations

import re

from petprobe.errors import PetprobeError

__all__ = ["check_dataset_name"]

# Dataset names become folder names (data/raw/<ds>, metrics/<ds>.json) and DVC stage names
# (download@<ds>): only letters, digits, '_' and '-', so no name can be '..', absolute or nested.
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_dataset_name(name, key: str = "dataset") -> str:
    """Return ``name`` if it is a safe dataset name, else raise with one line saying what is allowed."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        raise PetprobeError(f"{key} {name!r} is not a valid dataset name: use letters, digits, '_' and '-' "
                            "(starting with a letter or digit, at most 64 characters)")
    return name
