"""The Prometheus HTTP API (instant queries) and the PromQL pieces lmo fills in.

Series are selected with the labels every Triton pod's scrape carries (the chart relabels the
pod labels `lmo.dev/model` and `lmo.dev/version`): `namespace`, `lmo_model`, `lmo_version`;
lmo up's front door exports its own counters with the same labels.
Talks HTTP with `requests`; never imports kopf or kubernetes.
"""

from __future__ import annotations

import math

import requests

QUERY_TIMEOUT_SECONDS = 10.0


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query (unreachable, bad query, error status)."""


class Prometheus:
    """A minimal client of the Prometheus HTTP API (instant queries)."""

    def __init__(self, url: str, timeout: float = QUERY_TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Instant vector: (labels, value) per series; a scalar comes back as one series."""
        try:
            resp = requests.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
            body = resp.json()
        except (requests.RequestException, ValueError) as err:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {err}") from err
        if body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query {promql!r}: "
                f"{body.get('errorType', '')} {body.get('error', resp.status_code)}"
            )
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]


def selector(namespace: str, lm: str, version: str) -> str:
    return f'{{namespace="{namespace}",lmo_model="{lm}",lmo_version="{version}"}}'


def promql_range(window_seconds: float) -> str:
    """A PromQL range of whole seconds, at least 1s: `30s`."""
    return f"{max(1, int(math.ceil(window_seconds)))}s"


def per_model(prom: Prometheus, promql: str) -> dict[str, float]:
    """The query's finite values by their `model` label."""
    return {
        labels.get("model", ""): value
        for labels, value in prom.query(promql)
        if math.isfinite(value)
    }


def one_value(prom: Prometheus, promql: str) -> float | None:
    """The query's value (the sum when it returns several series); None without one."""
    values = [v for _, v in prom.query(promql) if math.isfinite(v)]
    return sum(values) if values else None


def fill(query: str, namespace: str, lm: str, version: str, window_seconds: float) -> str:
    """A user's PromQL with {{version}} {{namespace}} {{name}} {{window}} filled in."""
    return (query.replace("{{version}}", version).replace("{{namespace}}", namespace)
            .replace("{{name}}", lm).replace("{{window}}", promql_range(window_seconds)))
