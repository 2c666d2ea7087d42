"""Per-route request metrics of the HTTP API, in the node's Prometheus registry.

- ``n3xus_api_request_duration_seconds{method,route}``: a histogram of the time from
  the request reaching its route to the answer starting (streamed bodies excluded);
- ``n3xus_api_responses_total{method,route,status}``: answers by status code.

``route`` is the route template (``/api/v1/canon/pins/{name}``), never the concrete
path, so label cardinality stays bounded by the route table.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Histogram

# Local API calls answer in about a millisecond; uploads, exports and GC take seconds.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "n3xus_api_request_duration_seconds",
            "Time from a request reaching its API route to the answer starting",
            ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.responses = Counter(
            "n3xus_api_responses", "HTTP API answers by route and status code",
            ["method", "route", "status"], registry=registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.duration.labels(method, route).observe(seconds)
        self.responses.labels(method, route, str(status)).inc()


# One set per registry: the app may be built more than once on the same registry
# (tests, a restarted API), and prometheus_client refuses duplicate names.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, ApiMetrics] = (
    weakref.WeakKeyDictionary())


def api_metrics(registry: CollectorRegistry) -> ApiMetrics:
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = ApiMetrics(registry)
    return metrics
