"""Argument types and parser conventions shared by the step CLIs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (``crownsam: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(
            f"crownsam: error: {self.prog.removeprefix('crownsam ')}: {message} (see --help)", file=sys.stderr
        )
        sys.exit(2)


def bands_arg(text: str) -> tuple[int, ...]:
    """``3,2,1`` -> (3, 2, 1), 1-based band indices."""
    from crownsam.common.raster import parse_bands

    try:
        return parse_bands(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def shard_arg(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shard {text!r} must look like I/N, e.g. 0/4") from exc
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return i, n


def named_path_arg(text: str) -> tuple[str, str]:
    """``name=path`` -> (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} must look like NAME=PATH")
    return name, path


def parse_value(text: str) -> Any:
    """A pipeline argument from the command line: JSON when it parses (numbers, booleans), else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text
