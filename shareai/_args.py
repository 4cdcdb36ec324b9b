"""Argument types shared by the ``shareai`` commands (argparse ``type=`` functions)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int"]


def positive_int(text: str) -> int:
    """A whole number, 1 or more, in ASCII digits."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: a whole number, 1 or more")
    return int(text)
