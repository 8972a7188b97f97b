"""Routers, one module per resource: probes, model info, encode/decode, Prometheus, the demo page."""
