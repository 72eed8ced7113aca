"""Write-then-rename helpers: an output either appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crownsam.common.errors import InputError


def check_output_folder(target: str | Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that is an existing file (or below one): one line
    naming the path and the option, instead of an ``mkdir`` error at the end of the run. ``gs://``
    prefixes have no such conflict."""
    text = str(target)
    if "://" in text:
        return
    p = Path(text)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "is a file" if q == p else f"lies under the file {q}"
                raise InputError(p, f"{where}; {option} needs a folder")
            return


def check_output_file(target: str | Path, option: str = "--out") -> None:
    """Refuse, before any work, an output file that is an existing folder or lies below an existing
    file: one line naming the path and the option. ``gs://`` URIs have no such conflict."""
    text = str(target)
    if "://" in text:
        return
    p = Path(text)
    if p.is_dir():
        raise InputError(p, f"is a folder; {option} needs a file name")
    for q in p.parents:
        if q.exists():
            if not q.is_dir():
                raise InputError(p, f"lies under the file {q}; {option} needs a path in a folder")
            return


def _make_parent(target: Path) -> None:
    """Create ``target``'s folder; a path below an existing file is the user's mistake, not ours."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise InputError(target, "cannot be written: a part of its folder path is a file") from exc


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` that is renamed onto it only if the block succeeds.

    The temporary name keeps the target's suffix (drivers such as GPKG pick the format from it).
    On any exception the temporary file is removed and an existing ``target`` is left untouched.
    """
    target = Path(target)
    _make_parent(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as GDAL want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        for leftover in (tmp_path, *tmp_path.parent.glob(tmp_path.name + "-*")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@contextlib.contextmanager
def atomic_paths(*targets: str | Path) -> Iterator[list[Path]]:
    """Like :func:`atomic_path` for several outputs that belong together: all are written to temporary
    names first and renamed only when the block succeeds, so a failure replaces none of them."""
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(t)) for t in targets]
        yield tmps


def write_json(target: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON atomically; return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` (an older folder
    is moved aside first and removed only after the rename), on failure it is removed."""
    _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "x", target)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
