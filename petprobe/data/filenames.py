"""File names as the raw data holds them: whether one is valid UTF-8, and how to print any of them.

DVC records outputs in UTF-8, so a name that is not (a byte sequence from a legacy encoding,
arriving as lone surrogates through ``surrogateescape``) is left out by the unpacker and the mirror
copy and listed, printed with its bytes as ``\\xNN``.
"""

from __future__ import annotations

__all__ = ["is_utf8", "printable_name"]


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # a byte that is not UTF-8 arrives as a lone surrogate (surrogateescape)
    except UnicodeEncodeError:
        return False
    return True


def printable_name(name: str) -> str:
    """The name with undecodable bytes shown as \\xNN, so a UTF-8 record can always hold it."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
