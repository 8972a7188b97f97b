"""The offline codec CLI: `python -m service.codec compress|decompress|inspect` (see __main__)."""
