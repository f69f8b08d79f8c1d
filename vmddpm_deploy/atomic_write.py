"""Write a file so that its final name only ever holds complete contents.

The data goes to a hidden temporary file in the same directory (same filesystem, so the rename
is atomic) and is renamed over the target; on any failure the temporary file is removed and an
:class:`OutputError` says what happened (a full disk, a read-only directory, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Callable

from vmddpm_deploy.errors import OutputError


_TMP_PREFIX = ".{name}.tmp-"  # + the writer's pid


def temporaries(directory: str | os.PathLike) -> Iterator[tuple[Path, str]]:
    """Every temporary file :func:`write_atomic` made in ``directory`` and not renamed (yet), with
    the name of the file it was for."""
    for tmp in Path(directory).glob(".*.tmp-*"):
        target, _, pid = tmp.name[1:].rpartition(".tmp-")
        if target and pid.isdigit():
            yield tmp, target


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporary files a killed writer of ``path`` left beside it (``kill -9`` mid-write
    leaves the target intact but its temporary file behind). Call only while no one else writes ``path``."""
    path = Path(path)
    for stale, target in temporaries(path.parent):
        if target == path.name:
            _remove(stale)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX.format(name=path.name)}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: Path) -> None:
    """Remove the temporary file if it is there; cleaning up never hides the error being handled
    (under a path whose parent is a regular file, ``unlink`` raises NotADirectoryError)."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
