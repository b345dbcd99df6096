"""Error types with messages that name the file and the problem.

Every user-facing failure (bad options, bad weights, bad input text, unwritable output) is an
`ElmoError`; the CLI prints its message on one line and exits non-zero, without a traceback.
"""
from __future__ import annotations

import os
from typing import Optional


class ElmoError(Exception):
    """A problem with user input: a file, an option, a dataset; the message says which."""

    def __init__(self, message: str, path: Optional[os.PathLike | str] = None):
        self.path = None if path is None else os.fspath(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class OptionsError(ElmoError):
    """A malformed or inconsistent bilm-tf `options.json`."""


class WeightsError(ElmoError):
    """A weight file that lacks a dataset, has a wrong shape, or does not match the options."""


class InputError(ElmoError):
    """Bad input text (not UTF-8, not a list of token lists, ...)."""


class DataError(ElmoError):
    """A corpus, vocabulary or saved data position that cannot be used."""
