"""The offline codec CLI: `python -m codec compress|decompress|inspect` (see __main__); no server,
no web framework, no torch."""
