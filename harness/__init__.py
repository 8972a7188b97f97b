"""The one harness for tests, benchmarks and scripts that drive real servers.

- `harness.server`: a free port, a server process with wait-until-ready, its log, and a clean stop;
- `harness.prom`: Prometheus metrics read with prometheus_client's own parser, raising when a
  series is missing;
- `harness.multipart`: the one multipart/form-data body builder (well-formed or deliberately not).
"""
