"""The on-disk contract between export (which writes it) and the service (which reads it).

- `contract.manifest`: model.json's schema, its loading and the sha256 integrity checks;
- `contract.streams`: the packed and entropy-coded code-stream framing;
- `contract.entropy_model`: the entropy model's file and its use for range coding.

Neither torch nor any web framework is imported here, and no error carries an HTTP status: the
service maps these errors to responses at its edge, export reports them on the command line.
"""

from __future__ import annotations


class ContractError(Exception):
    """A file or stream that breaks the contract; `code` is a stable slug naming the kind."""

    code = "contract_violation"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
