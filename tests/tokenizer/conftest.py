"""The service fixtures, for comparing tokens with what the service answers."""

from tests.service.conftest import server  # noqa: F401 (a fixture, used by name)
