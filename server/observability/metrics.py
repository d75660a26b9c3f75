"""Prometheus metrics of one server process (`GET /metrics`), with prometheus_client.

Counters and histograms are updated as requests run; gauges (running and waiting requests, the
engine's load, its KV cache and prefix cache) are read when Prometheus scrapes. Each app has its
own registry, so several apps in one process (tests) do not collide.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.engine.generation import EngineStats

# Seconds, from a fast GPU's first token to a slow CPU's whole answer.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
    80.0, 160.0, 320.0, 640.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip


class Metrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kangaroo_http_requests",
            "HTTP requests answered, by route, status and model (base model or adapter name).",
            ["route", "status", "model"],
            registry=r,
        )
        self.rejected = Counter(
            "kangaroo_rejected_requests",
            "Requests refused before generating, by reason.",
            ["reason"],
            registry=r,
        )
        self.generations = Counter(
            "kangaroo_generations",
            "Admitted generation requests by how they ended: completed, client_closed, or the "
            "error's code (request_timeout, server_shutting_down, engine_dead, ...).",
            ["outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            "kangaroo_time_to_first_token_seconds",
            "From a live request's arrival to its first generated token (queue included); "
            "batch lines get their answers whole and are not counted.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "kangaroo_inter_token_latency_seconds",
            "Between consecutive engine outputs of one live request.",
            ["model"],
            buckets=TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "kangaroo_e2e_request_latency_seconds",
            "From a generation request's arrival to its end.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "kangaroo_queue_time_seconds",
            "Time a request waited for a place in the engine.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "kangaroo_prompt_tokens",
            "Prompt tokens of admitted requests, by key id, model and mode (live or batch).",
            ["key_id", "model", "mode"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "kangaroo_completion_tokens",
            "Generated tokens, by key id, model and mode (live or batch).",
            ["key_id", "model", "mode"],
            registry=r,
        )
        self.adapter_loads = Counter(
            "kangaroo_adapter_loads",
            "Adapter versions loaded into the engine, by result (loaded, refused).",
            ["result"],
            registry=r,
        )

    def watch(self, load: Callable[[], "Load"]) -> None:
        """Export the gauges `load()` returns at each scrape."""
        self.registry.register(_LoadCollector(load))


@dataclass(frozen=True)
class Load:
    """What the gauges show: the server's queue and the engine's own figures."""

    running: int
    waiting: int
    draining: bool
    engine: EngineStats | None


class _LoadCollector(Collector):
    def __init__(self, load: Callable[[], Load]):
        self._load = load

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        load = self._load()
        yield _gauge(
            "kangaroo_requests_running", "Sequences generating (places taken).", load.running
        )
        yield _gauge("kangaroo_requests_waiting", "Requests waiting for a place.", load.waiting)
        yield _gauge(
            "kangaroo_draining", "1 while the server drains before exiting.", load.draining
        )
        engine = load.engine
        yield _gauge("kangaroo_engine_ready", "1 when the engine can generate.", engine is not None)
        if engine is None:
            return
        yield _gauge(
            "kangaroo_engine_requests_running",
            "Requests in the engine's running batch (its last step).",
            engine.num_running_requests,
        )
        yield _gauge(
            "kangaroo_engine_requests_waiting",
            "Requests waiting in the engine's scheduler (its last step).",
            engine.num_waiting_requests,
        )
        yield _gauge(
            "kangaroo_kv_cache_usage_ratio",
            "Fraction of KV-cache blocks in use, 0..1.",
            engine.kv_cache_usage,
        )
        yield _counter(
            "kangaroo_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            engine.prefix_cache_queries,
        )
        yield _counter(
            "kangaroo_prefix_cache_hits",
            "Prompt tokens found in the prefix cache.",
            engine.prefix_cache_hits,
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
