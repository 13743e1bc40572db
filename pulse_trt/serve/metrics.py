"""Prometheus metrics of one service (its own CollectorRegistry: no module-level state).

    pulse_http_requests_total{route, status}   requests answered, by route and status code
    pulse_http_request_seconds{route}          request latency (histogram)
    pulse_queue_depth                          searches waiting for a slot
    pulse_slots / pulse_slots_busy             the engine's rows, and those running a search
    pulse_jobs_live                            jobs (POST /v1/jobs) not finished
    pulse_ready                                1 once the artefacts are loaded and the engine warm
    pulse_steps_per_second                     optimiser row-steps per second (last 30 s)
    pulse_images_per_second                    searches finished per second (last 30 s)
    pulse_search_row_steps_total               optimiser row-steps run (counter)
    pulse_searches_total{outcome}              finished searches: success, missed (eps), failed, cancelled
    pulse_success_ratio                        success / (success + missed)
    pulse_search_seconds                       time a search took, submission to result (histogram)
    pulse_queue_seconds                        time a search waited for a slot (histogram)
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class _EngineCounters:
    """Counters read from the engine at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        c = CounterMetricFamily("pulse_search_row_steps", "optimiser row-steps run")
        c.add_metric([], float(self.engine.row_steps))
        yield c
        s = CounterMetricFamily("pulse_searches", "finished searches by outcome", labels=["outcome"])
        for outcome in ("success", "missed", "failed", "cancelled"):
            s.add_metric([outcome], float(self.engine.finished.get(outcome, 0)))
        yield s


class Metrics:
    """The service's metrics; `render()` is the /metrics body."""

    def __init__(self, engine, jobs):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pulse_http_requests", "requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("pulse_http_request_seconds", "request latency", ["route"],
                                 buckets=SECONDS_BUCKETS, registry=r)
        self.search_seconds = Histogram("pulse_search_seconds", "time a search took (its submission to its result)",
                                        buckets=SECONDS_BUCKETS, registry=r)
        self.queue_seconds = Histogram("pulse_queue_seconds", "time a search waited for its first sync in a slot",
                                       buckets=SECONDS_BUCKETS, registry=r)
        Gauge("pulse_queue_depth", "searches waiting for a slot", registry=r).set_function(lambda: engine.queue_depth)
        Gauge("pulse_slots", "rows of the engine", registry=r).set_function(lambda: engine.slots)
        Gauge("pulse_slots_busy", "rows running a search", registry=r).set_function(lambda: engine.busy_slots)
        Gauge("pulse_jobs_live", "jobs not finished", registry=r).set_function(lambda: len(jobs.live()))
        Gauge("pulse_ready", "1 when the engine is loaded and warm", registry=r).set_function(lambda: float(engine.ready))
        Gauge("pulse_steps_per_second", "optimiser row-steps per second, last 30 s",
              registry=r).set_function(lambda: engine.rates()[0])
        Gauge("pulse_images_per_second", "searches finished per second, last 30 s",
              registry=r).set_function(lambda: engine.rates()[1])

        def ratio() -> float:
            ok, missed = engine.finished.get("success", 0), engine.finished.get("missed", 0)
            return ok / (ok + missed) if ok + missed else 0.0

        Gauge("pulse_success_ratio", "searches within eps / searches finished", registry=r).set_function(ratio)
        r.register(_EngineCounters(engine))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_search(self, record: dict) -> None:
        self.search_seconds.observe(float(record.get("seconds", 0.0)))
        self.queue_seconds.observe(float(record.get("queue_seconds", 0.0)))

    def answered(self) -> dict[str, dict[str, int]]:
        """Requests answered so far by route and status, e.g. {"/v1/upsample": {"200": 120, "503": 4}}."""
        out: dict[str, dict[str, int]] = {}
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    route = out.setdefault(sample.labels["route"], {})
                    route[sample.labels["status"]] = int(sample.value)
        return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}

    def render(self) -> bytes:
        return generate_latest(self.registry)
