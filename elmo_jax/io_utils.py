"""File helpers: atomic writes (temp file + rename) and strict UTF-8 line reading."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterable, Iterator, Optional

from .errors import ElmoError, InputError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process's umask, read once: new outputs get the mode a plain open() would give them.
UMASK = _read_umask()


def same_file(a: os.PathLike | str, b: os.PathLike | str) -> bool:
    """Do two paths name the same file (links followed; a path that does not exist yet never does)?"""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_dir(path: os.PathLike | str, option: str) -> None:
    """One `ElmoError` line if the directory `path` cannot exist or be made: it, or an ancestor, is a file."""
    path = os.fspath(path)
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"cannot be made: {probe} is a file"
        raise ElmoError(f"{option} {where}, expected a directory", path)


def check_output_file(path: os.PathLike | str, *, inputs: Iterable[Optional[os.PathLike | str]] = (),
                      overwrite: bool = False, option: str = "--output") -> None:
    """Before any compute: raise one `ElmoError` line if `path` cannot be this command's new output file:
    a directory, one of the command's `inputs`, an existing file without `overwrite`, or in a
    directory that does not exist or is not writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ElmoError(f"{option} is a directory; give a file path", path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise ElmoError(f"{option} is also an input of this command; writing it would destroy that input", path)
    if os.path.lexists(path) and not overwrite:
        raise ElmoError(f"{option} already exists; nothing was written (pass --overwrite to replace it)", path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ElmoError(f"cannot write {option}: {parent} is a file, not a directory", path)
    if not os.path.exists(parent):  # as `atomic_output` would find it, after the compute
        raise ElmoError(f"cannot write {option}: its directory does not exist", path)
    if not os.access(parent, os.W_OK | os.X_OK):  # the temporary file is made beside the target
        raise ElmoError(f"cannot write {option}: its directory is not writable", path)


@contextlib.contextmanager
def atomic_output(path: os.PathLike | str, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure (or an interrupt) removes the temporary file, so no partial output is ever left
    behind and an existing file at `path` is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ElmoError("cannot write output: its directory does not exist", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=directory)
    except OSError as e:
        raise ElmoError(f"cannot write output ({e.strerror})", path)
    os.close(fd)
    try:
        # mkstemp makes the file 0600; give it the mode of the file it replaces, or a new file's mode
        os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o666 & ~UMASK)
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise ElmoError(f"cannot write output ({e.strerror or e})", path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: os.PathLike | str, text: str) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def read_lines(path: os.PathLike | str) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file without their line ending.

    Raises `InputError` naming the file and line for bytes that are not UTF-8."""
    path = os.fspath(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError("input file not found", path)
    except IsADirectoryError:
        raise InputError("is a directory, expected a text file", path)
    except OSError as e:
        raise InputError(f"cannot read input ({e.strerror})", path)
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"line {lineno} is not valid UTF-8 (byte offset {e.start} in the line)", path)
            yield line.rstrip("\r\n")


def read_json_objects(path: os.PathLike | str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file (a leading byte-order
    mark is ignored). A line that is not valid JSON, or not a JSON object, is an `InputError`
    naming the file and the line."""
    for lineno, line in enumerate(read_lines(path), start=1):
        if lineno == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})", path)
        if not isinstance(obj, dict):
            raise InputError(f"line {lineno}: expected a JSON object, got {type(obj).__name__}", path)
        yield lineno, obj
