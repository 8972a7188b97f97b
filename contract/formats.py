"""The output formats of /encode: one table, read by the routes, the codec CLI, the OpenAPI text and
the error messages, so that a new format is one row here (and its coder in streams.py).

    fmt = output_format("entropy")       # UnknownFormat for a name not in the table
    fmt.stream_kind                       # Kind.ENTROPY: a binary stream /decode accepts
    fmt.requires                          # "entropy_model": what the model must ship for it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from contract import ContractError
from contract.streams import Kind

Requirement = Literal["entropy_model", "prior"]


@dataclass(frozen=True)
class OutputFormat:
    name: str  # the value of ?format= and of the codec CLI's --format
    stream_kind: Kind | None  # None: not a binary stream (JSON)
    media_type: str
    requires: Requirement | None  # what the model must ship to produce it (None: every model can)
    summary: str  # one phrase for help texts and the OpenAPI description

    @property
    def is_stream(self) -> bool:
        return self.stream_kind is not None


FORMATS: tuple[OutputFormat, ...] = (
    OutputFormat("json", None, "application/json", None, "lists of ints (the default)"),
    OutputFormat("packed", Kind.PACKED, "application/octet-stream", None, "ceil(log2 K) bits per code"),
    OutputFormat("entropy", Kind.ENTROPY, "application/octet-stream", "entropy_model",
                 "range-coded with the model's static context model"),
    OutputFormat("prior", Kind.PRIOR, "application/octet-stream", "prior",
                 "range-coded with the learned prior's conditionals (models that ship a prior, native-size grids)"),
)
BY_NAME = {f.name: f for f in FORMATS}
DEFAULT_FORMAT = FORMATS[0]
FORMAT_NAMES = tuple(BY_NAME)
STREAM_FORMATS = tuple(f for f in FORMATS if f.is_stream)
STREAM_FORMAT_NAMES = tuple(f.name for f in STREAM_FORMATS)
BY_KIND = {f.stream_kind: f for f in STREAM_FORMATS}


class UnknownFormat(ContractError):
    code = "invalid_parameter"


def quoted(names: tuple[str, ...], last: str = "or") -> str:
    """('a', 'b', 'c') -> "'a', 'b' or 'c'": how the error messages list the choices."""
    items = [f"'{name}'" for name in names]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def output_format(name: str) -> OutputFormat:
    found = BY_NAME.get(name)
    if found is None:
        raise UnknownFormat(f"format {name[:40]!r} is not one of {quoted(FORMAT_NAMES)}")
    return found


def format_of_kind(kind: Kind) -> OutputFormat:
    return BY_KIND[kind]


def describe_formats() -> str:
    """The formats as one help text: `json`: ...; `packed`: ...; ..."""
    return "; ".join(f"`{f.name}`: {f.summary}" for f in FORMATS) + \
        f". The binary formats ({', '.join(STREAM_FORMAT_NAMES)}) are {STREAM_FORMATS[0].media_type} streams " \
        "that /decode accepts"
