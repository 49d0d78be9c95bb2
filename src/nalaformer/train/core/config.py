"""Dataclass configs that double as CLI flags and YAML recipes.

Every field of a config dataclass becomes a ``--flag`` (underscores -> dashes); a YAML file given
with ``--config`` sets defaults, flags given on the command line win. Unknown YAML keys are errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import types
import typing
from typing import Any

__all__ = ["option", "positive_int", "validate_config", "changed_settings", "describe_changes",
           "add_dataclass_arguments", "config_from_args", "load_yaml"]


def option(default=None, help: str = "", *, min: float | None = None, choices: tuple | None = None):
    """A config field with a default, the help text its ``--flag`` shows, an optional lower bound and an
    optional set of allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "min": min, "choices": choices})


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def validate_config(config) -> None:
    """Types (an int field takes no float or bool, e.g. from YAML) and lower bounds of a config dataclass;
    a ValueError names the option."""
    types_ = _field_types(type(config))
    for f in dataclasses.fields(config):
        value, kind, flag = getattr(config, f.name), types_[f.name], _flag(f.name)
        if value is None:
            continue
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or (kind is int and not isinstance(value, int))):
            raise ValueError(f"{flag}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{flag}: expected true or false, got {value!r}")
        low = f.metadata.get("min")
        if low is not None and value < low:
            raise ValueError(f"{flag}: expected a value >= {low:g}, got {value!r}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{flag}: expected one of {', '.join(map(str, choices))}, got {value!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_value(kind, text: str):
    """Parse a CLI string for a field annotated ``kind`` (JSON for lists/dicts/None)."""
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")
    if kind in (int, float, str):
        return kind(text)
    if kind in (dict, list):
        value = json.loads(text)
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}, got {text!r}")
        return value
    return text


def _field_types(cls) -> dict[str, type]:
    """Field name -> its base type (Optional[X] / X | None -> X, dict[str, int] -> dict)."""
    out = {}
    for name, kind in typing.get_type_hints(cls).items():
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        out[name] = typing.get_origin(kind) or kind
    return out


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add ``--config`` and one flag per dataclass field (default None = 'not given')."""
    parser.add_argument("--config", type=pathlib.Path, default=None, help="YAML recipe; flags override it")
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        base = types_[f.name]
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(_flag(f.name), dest=f.name, default=None, metavar=base.__name__.upper()
                            if isinstance(base, type) else "VALUE",
                            type=lambda s, b=base: _parse_value(b, s), help=f"{help_text} (default: {default})")


def load_yaml(path: pathlib.Path) -> dict[str, Any]:
    import yaml

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no such file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config: {path} must hold a mapping of option: value")
    return data


def config_from_args(cls, args: argparse.Namespace):
    """Build ``cls`` from YAML (if any) overlaid by the flags that were given."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        data = load_yaml(args.config)
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"--config {args.config}: unknown option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(sorted(names))}")
        types_ = _field_types(cls)
        for key, value in data.items():  # YAML may spell numbers as strings ("1e-5"): coerce them
            if isinstance(value, str) and types_[key] is not str:
                try:
                    value = _parse_value(types_[key], value)
                except (ValueError, argparse.ArgumentTypeError) as exc:
                    raise ValueError(f"--config {args.config}: option {key}: {exc}") from exc
            values[key] = value
    values.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    config = cls(**values)
    validate_config(config)
    return config


def changed_settings(saved: dict, config, ignore: set[str] = frozenset()) -> dict[str, tuple[Any, Any]]:
    """Settings of ``config`` that differ from ``saved`` (a checkpoint's ``dataclasses.asdict`` of its config):
    name -> (saved, now). Fields in ``ignore`` and fields the checkpoint does not know are left out."""
    now = dataclasses.asdict(config)
    return {k: (saved[k], v) for k, v in now.items() if k in saved and k not in ignore and saved[k] != v}


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{_flag(k)} {old!r} -> {new!r}" for k, (old, new) in changes.items())
