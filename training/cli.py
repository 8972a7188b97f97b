"""Command-line overrides for a (nested) config dataclass: every field becomes a flag.

`--lr 1e-3`, `--model.hidden 128`, `--model.ema false`. No exec'd config files: the dataclass
defaults are the config, and what a run changed is visible in its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(annotation: Any) -> Any:
    """int | None -> int, bool -> parse_bool, str -> str."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return parse_bool if annotation is bool else annotation


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        name = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint):
            add_dataclass_arguments(parser, typing.cast(type, hint), prefix=f"{name}.")
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_converter(hint),
                            default=argparse.SUPPRESS, metavar=type(default).__name__.upper(),
                            help=f"(default: {default})")


def parse_config(cls: type[T], prog: str, description: str | None, argv: list[str] | None) -> T:
    """The command line -> `cls` with its defaults and the flags given (every field a flag)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(parser, cls)
    return build_config(cls, vars(parser.parse_args(argv)))


def build_config(cls: type[T], overrides: dict[str, Any]) -> T:
    """Defaults of `cls` with dotted overrides applied: {"model.hidden": 128, "lr": 1e-3}."""
    hints = typing.get_type_hints(cls)
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = build_config(hints[head], sub)
    return cls(**direct)


def run_and_report(train: Callable[[], dict[str, Any] | None], expected: tuple[type[Exception], ...]) -> int:
    """A trainer's command line: its final metrics as JSON on stdout, an expected error (bad data, a
    bad checkpoint) as one line on stderr and exit status 1."""
    try:
        metrics = train()
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
