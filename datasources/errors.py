"""What can go wrong when opening or reading a data set; each message names the file and the problem."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set that cannot be used: missing or malformed files, nothing readable, a bad spelling."""


class DataError(DatasetError):
    """A built-in set's IDX file is missing or malformed."""


class SourceError(DatasetError):
    """A folder or tar-shard source that cannot be used: nothing there, or nothing readable."""


class UnreadableImage(Exception):
    """One file that does not decode; readers skip it with a warning naming it."""
