"""Where command output goes: ``-o PATH`` files, stdout, and plain-text tables.

``-o PATH`` rules (issue 7 §3):
- ``-o -`` (or no ``-o``) is stdout;
- a regular file (or a new name) is written to a temporary file in the same directory
  and renamed over PATH only when complete, so a failed download never leaves half a
  file under the name, and readers never see one;
- anything else that exists (a symlink, a FIFO, a character device such as
  ``/dev/stdout``) is written in place: renaming over it would replace the link, the
  pipe or the device with a regular file;
- a missing directory or an unwritable path is one line: ``cannot write PATH: …``.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import click

STDOUT = "-"


def _cannot(path: str, why: str) -> click.ClickException:
    return click.ClickException(f"cannot write {path}: {why}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def output_stream(path: str | None) -> Iterator[BinaryIO]:
    """A binary stream for ``-o path``; see the module docstring for the rules."""
    if path is None or path == STDOUT:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise _cannot(path, exc.strerror or str(exc)) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise _cannot(path, "it is a directory")
    if info is not None and not stat.S_ISREG(info.st_mode):
        yield from _in_place(path)
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise _cannot(path, f"directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{Path(path).name}.", suffix=".part")
    except OSError as exc:
        raise _cannot(path, exc.strerror or str(exc)) from None
    # mkstemp makes the file 0600; give it the mode the replaced file had, or the one
    # a newly created file would get.
    os.fchmod(fd, stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave half an output behind
        raise


def _in_place(path: str) -> Iterator[BinaryIO]:
    try:
        sink = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise _cannot(path, exc.strerror or str(exc)) from None
    with sink:
        yield sink


def write_output(data: bytes | str, path: str | None) -> int:
    """Write ``data`` to ``-o path`` (stdout for None or ``-``); returns bytes written."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with output_stream(path) as sink:
        sink.write(raw)
    return len(raw)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns (two spaces apart; the last column not padded)."""
    everything = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in everything) for i in range(len(headers))]
    lines = []
    for row in everything:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return lines
