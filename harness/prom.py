"""Prometheus text exposition read with prometheus_client's own parser.

    scrape = Scrape.of("http://127.0.0.1:8000")
    scrape.value("vqvae_requests_total", route="/encode", status="200")   # summed over matching series

A series that is not there raises MissingSeries: a test must never read a missing metric as 0.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class MissingSeries(LookupError):
    pass


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for family in self.families.values() for s in family.samples]

    @classmethod
    def of(cls, base_url: str, timeout: float = 10, headers: dict[str, str] | None = None) -> Scrape:
        response = httpx.get(base_url.rstrip("/") + "/metrics", timeout=timeout, headers=headers)
        response.raise_for_status()
        return cls(response.text)

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The sum of every sample named `name` whose labels include `labels`; MissingSeries if none."""
        found = self.matching(name, **labels)
        if not found:
            known = sorted({s.name for s in self.samples if s.name.startswith(name.split("_")[0])})[:20]
            raise MissingSeries(f"no series {name}{labels or ''} in the scrape (similar: {', '.join(known)})")
        return sum(s.value for s in found)

    def value_or(self, default: float, name: str, **labels: str) -> float:
        """As value(), but `default` for a series not created yet (say, a counter before its first use):
        for readings taken *before* an action; the reading after it should use value()."""
        found = self.matching(name, **labels)
        return sum(s.value for s in found) if found else default
