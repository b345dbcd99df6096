"""The one config base of `TrainConfig` and `TaskConfig`: JSON files and `key=value` overrides
into frozen dataclasses, every key type-checked from its annotation.

    @dataclasses.dataclass(frozen=True)
    class MyConfig(ConfigBase):
        key_word = "config key"      # how messages name a key: "config key 'dropout' must be ..."
        config_name = "config"       # how they name the whole: "a config must be a JSON object"

        dropout: float = 0.1
        max_steps: Optional[int] = None
        optimizer: Literal["adagrad", "adam"] = "adagrad"

        def validate(self, source=None):   # value checks; types are checked first by the base
            super().validate(source)
            ...
            return self

    MyConfig.from_json("c.json", ["dropout=0.2", "model.lstm.dim=256"])

Annotations understood: `int` (not bool), `float` (an int is accepted and stored as float;
NaN/inf are not), `bool`, `str`, `dict`, `Optional[X]`, `Union[...]`, `Literal[...]` (the choices:
a value must equal one with the same type, so `true` is not `1`), `tuple[X, ...]`, `tuple[X, Y]`,
`list[X]` (JSON lists; tuples are stored as tuples), nested dataclasses (their keys are checked the
same way, reached by dotted keys) and any class with `from_dict(data, source=...)` and `to_dict()`
(such as `ModelOptions`: it parses and checks its own dictionary). Anything else is taken as is.

A wrong type is one `ConfigError` line naming the key and the expected type:
`c.json: config key 'dropout' must be a number, got 'high'`.

`key=value` overrides: the value is JSON when it parses and fits the key's type, else the text
itself (so `vocab=123` is the string "123" and `shard_softmax=true` the string "true", while
`max_steps=true` is an error). Dotted keys reach into nested objects: `model.lstm.dim=256`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
import types
import typing
from typing import Any, Literal, Optional, Sequence, Union

from .errors import ElmoError
from .io_utils import atomic_write_text


class ConfigError(ElmoError):
    """A config file or `--set` override that is malformed or names a key that does not exist."""


# --------------------------------------------------------------------------- annotations
def _optional_parts(annotation: Any) -> Optional[tuple]:
    """The members of a Union (X | Y, Optional[X]), else None."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def strip_optional(annotation: Any) -> Any:
    parts = _optional_parts(annotation)
    if parts is not None:
        rest = [p for p in parts if p is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _is_object_class(annotation: Any) -> bool:
    """A nested object: a dataclass, or a class that parses its own dictionary."""
    return isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or (hasattr(annotation, "from_dict") and hasattr(annotation, "to_dict")))


def _has_own_parser(cls: type) -> bool:
    """A class whose `from_dict` is not the base's field-by-field one (e.g. ModelOptions)."""
    return hasattr(cls, "from_dict") and not issubclass(cls, ConfigBase)


def show(value: Any) -> str:
    """A value as a message shows it: JSON spelling for true/false/null, else repr (shortened)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(annotation: Any) -> str:
    """'an integer', 'a number or null', "one of 'adagrad', 'adam'", ... for a type annotation."""
    parts = _optional_parts(annotation)
    if parts is not None:
        named = [describe(p) for p in parts if p is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in parts else "")
    if annotation is type(None):
        return "null"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(show(c) for c in typing.get_args(annotation))
    if origin in (tuple, list) or annotation in (tuple, list):
        args = typing.get_args(annotation)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} items"
        return "a list"
    if annotation is dict or origin is dict or _is_object_class(annotation):
        return "an object"
    return getattr(annotation, "__name__", str(annotation))


def check_value(key: str, value: Any, annotation: Any, *, key_word: str = "config key",
                source: Optional[str] = None) -> Any:
    """`value` as stored for a key of type `annotation` (ints become floats for float keys, lists
    tuples for tuple keys, dicts nested objects); a `ConfigError` naming `key` if it does not fit."""

    def bad(why: Optional[str] = None) -> ConfigError:
        return ConfigError(f"{key_word} '{key}' must be {why or describe(annotation)}, got {show(value)}", source)

    if annotation is Any:
        return value
    parts = _optional_parts(annotation)
    if parts is not None:
        if value is None and type(None) in parts:
            return None
        rest = [p for p in parts if p is not type(None)]
        if len(rest) == 1 and _is_object_class(rest[0]) and isinstance(value, dict):
            return check_value(key, value, rest[0], key_word=key_word, source=source)  # its precise message
        for part in rest:
            try:
                return check_value(key, value, part, key_word=key_word, source=source)
            except ConfigError:
                pass
        raise bad()
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise bad()
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise bad("a finite number")
            return float(value)
        raise bad()
    if annotation is str:
        if isinstance(value, str):
            return value
        raise bad()
    origin = typing.get_origin(annotation)
    if origin is Literal:
        for choice in typing.get_args(annotation):
            if type(value) is type(choice) and value == choice:
                return choice
        raise bad()
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad()
        args = typing.get_args(annotation)
        if not args:
            items = list(value)
        elif origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad()
            items = [check_value(f"{key}[{i}]", v, a, key_word=key_word, source=source)
                     for i, (v, a) in enumerate(zip(value, args))]
        else:
            items = [check_value(f"{key}[{i}]", v, args[0], key_word=key_word, source=source)
                     for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise bad()
    if _is_object_class(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise bad()
        if _has_own_parser(annotation):
            return annotation.from_dict(value, source=source)
        values = parse_fields(annotation, value, source, key_word=key_word, prefix=key + ".")
        obj = annotation(**values)
        return obj.validate(source) if isinstance(obj, ConfigBase) else obj
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise bad()
    return value


# --------------------------------------------------------------------------- dataclasses
_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a dataclass, in field order."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    return _HINTS[cls]


def parse_fields(cls: type, data: Any, source: Optional[str] = None, *, key_word: str = "config key",
                 prefix: str = "", what: str = "config") -> dict:
    """Check a dictionary against the fields of dataclass `cls`: unknown keys (listing the known
    ones), missing keys without a default, and every value's type. Returns the values as stored."""
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else show(data)
        where = f"{key_word} '{prefix[:-1]}'" if prefix else f"a {what}"
        raise ConfigError(f"{where} must be a JSON object, got {kind}", source)
    hints = field_types(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown {key_word}(s): {', '.join(prefix + k for k in unknown)} "
                          f"(known: {', '.join(sorted(hints))})", source)
    for f in dataclasses.fields(cls):
        if (f.init and f.name not in data and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise ConfigError(f"missing {key_word} '{prefix}{f.name}'", source)
    return {k: check_value(prefix + k, v, hints[k], key_word=key_word, source=source) for k, v in data.items()}


def to_plain(value: Any) -> Any:
    """A stored value as JSON data: nested objects through `to_dict`, tuples as lists."""
    if hasattr(value, "to_dict") and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key '{key}'")
        out[key] = value
    return out


def load_json(path: os.PathLike | str, what: str = "config") -> Any:
    """A JSON file's data; `ConfigError` naming the file (and line and column) if it cannot be."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", path)
    except OSError as e:
        raise ConfigError(f"cannot read {what} file ({e.strerror})", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} file is not UTF-8 (byte {e.start})", path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}", path)
    except ConfigError as e:
        raise ConfigError(e.detail, path)


def parse_value(raw: str, annotation: Any = None) -> Any:
    """An override's text as a value: JSON when it parses and fits `annotation` (if given), else
    the text itself when that fits; else the JSON value (whose type error is then reported)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if annotation is not None and not _fits(value, annotation) and _fits(raw, annotation):
        return raw
    return value


def _fits(value: Any, annotation: Any) -> bool:
    try:
        check_value("", value, annotation)
        return True
    except ConfigError:
        return False
    except ElmoError:  # a nested object's own parser: leave the message to it
        return True


def apply_overrides(cls: type, data: Any, overrides: Sequence[str], source: Optional[str] = None,
                    *, key_word: str = "config key") -> dict:
    """A copy of `data` (a dict for dataclass `cls`) with `a.b.c=value` strings applied.
    Unknown keys are errors; nested objects missing from `data` start from the field's default."""
    if not isinstance(data, dict):
        return data  # from_dict reports it
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}", source)
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")

        def unknown(depth: int) -> ConfigError:
            return ConfigError(f"--set {key}: unknown {key_word} '{'.'.join(parts[:depth + 1])}'", source)

        node: dict = data
        node_cls: Optional[type] = cls  # a dataclass whose fields are the keys of `node`, or None
        default: Any = None  # the same place in the defaults, for an object that parses itself
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if node_cls is not None:
                hints = field_types(node_cls)
                if part not in hints:
                    raise unknown(depth)
                annotation = hints[part]
                if last:
                    node[part] = parse_value(raw, annotation)
                    break
                target = strip_optional(annotation)
                if not _is_object_class(target):
                    raise unknown(depth + 1)
                field_default = _field_default(node_cls, part)
                if part not in node or node[part] is None:
                    node[part] = to_plain(field_default) if field_default is not None else {}
                elif not isinstance(node[part], dict):
                    node[part] = to_plain(node[part])
                if not isinstance(node[part], dict):
                    raise unknown(depth + 1)
                node = node[part]
                if _has_own_parser(target):
                    node_cls = None
                    default = to_plain(field_default) if field_default is not None else {}
                    if hasattr(target, "optional_keys"):  # keys the plain default leaves out
                        default = _with_missing(default, target.optional_keys())
                else:
                    node_cls = target
            else:
                parent_default = default if isinstance(default, dict) else {}
                default = parent_default.get(part)
                if last:
                    if part not in node and part not in parent_default:
                        raise unknown(depth)
                    node[part] = parse_value(raw)
                    break
                if part not in node and isinstance(default, dict):
                    node[part] = copy.deepcopy(default)
                if not isinstance(node.get(part), dict):
                    raise unknown(depth)
                node = node[part]
    return data


def _with_missing(data: dict, extra: dict) -> dict:
    """`data` with the keys of `extra` it lacks (nested dicts merged, `data`'s values kept)."""
    out = dict(data)
    for key, value in extra.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _with_missing(out[key], value)
    return out


def _field_default(cls: type, name: str) -> Any:
    f = cls.__dataclass_fields__[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


class ConfigBase:
    """Mixin for frozen dataclass configs: `from_dict` / `from_json` (with overrides) / `to_dict` /
    `to_json` / `replace`, and `validate`, which checks every field's type from its annotation
    (subclasses extend it with value checks, calling `super().validate(source)` first)."""

    key_word = "config key"  # messages: "config key 'x' must be ...", "unknown config key(s): ..."
    config_name = "config"  # messages: "a config must be a JSON object", "config file not found"

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return field_types(cls)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def check_types(self, source: Optional[str] = None):
        """`ConfigError` for the first field whose value does not fit its annotation."""
        for name, annotation in field_types(type(self)).items():
            check_value(name, getattr(self, name), annotation, key_word=self.key_word, source=source)
        return self

    def validate(self, source: Optional[str] = None):
        return self.check_types(source)

    #: Range rules for `check_ranges`: name -> (test, what the value must be).
    RANGES = {
        "positive": (lambda v: v >= 1, "must be a positive integer"),
        "non_negative": (lambda v: v >= 0, "must be an integer >= 0"),
        "positive_number": (lambda v: v > 0, "must be a positive number"),
        "at_least_zero": (lambda v: v >= 0, "must be >= 0"),
        "probability": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    }

    def check_ranges(self, source: Optional[str] = None, **rules: tuple[str, ...]):
        """`ConfigError` for the first key outside its range: `rules` maps a `RANGES` name to the keys
        it applies to (None values are skipped: optional keys)."""
        for rule, keys in rules.items():
            test, what = self.RANGES[rule]
            for key in keys:
                value = getattr(self, key)
                if value is not None and not test(value):
                    raise ConfigError(f"{self.key_word} '{key}' {what}, got {value!r}", source)
        return self

    # ------------------------------------------------------------------ dict / JSON
    def to_dict(self) -> dict:
        return {name: to_plain(getattr(self, name)) for name in field_types(type(self))}

    @classmethod
    def parse_dict(cls, data: Any, source: Optional[str] = None) -> dict:
        """Check `data` (unknown keys, types) without building or validating a config; the
        values as stored."""
        return parse_fields(cls, data, source, key_word=cls.key_word, what=cls.config_name)

    @classmethod
    def from_dict(cls, data: Any, source: Optional[str] = None):
        return cls(**cls.parse_dict(data, source)).validate(source)

    @classmethod
    def load_json(cls, path: os.PathLike | str) -> Any:
        """A config file's raw data (not yet checked)."""
        return load_json(path, cls.config_name)

    @classmethod
    def apply_overrides(cls, data: Any, overrides: Sequence[str], source: Optional[str] = None) -> Any:
        return apply_overrides(cls, data, overrides, source, key_word=cls.key_word)

    @classmethod
    def from_json(cls, path: os.PathLike | str, overrides: Sequence[str] = ()):
        """Read a config file and apply `key=value` overrides (see the module docstring)."""
        path = os.fspath(path)
        data = cls.load_json(path)
        if not isinstance(data, dict):
            cls.parse_dict(data, path)  # raises: not an object
        return cls.from_dict(cls.apply_overrides(data, overrides, path), source=path)

    def to_json(self, path: os.PathLike | str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
