"""File helpers: atomic writes (temp file + rename) and strict UTF-8 line reading."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterator

from .errors import ElmoError, InputError


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
