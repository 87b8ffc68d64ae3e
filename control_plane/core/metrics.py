"""The control plane's Prometheus families, served at `/metrics` (metrics_route.py).

Every family Conch exports is declared here with its labels, and listed in
docs/OBSERVABILITY.md. Label values come from bounded sets only: route templates
(never raw paths or ids), status codes, registered models' Triton names, event
types and fixed outcome words. Hot paths bind their children once (`Children`):
per request they do a dict lookup and an increment, no label formatting.

With several uvicorn workers each process writes its values to files under
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, chosen when the
variable is set before the first metric exists: `conch serve --workers N` sets
it), and a scrape of any worker sums them all (`exposition`). Without it the
values are this process's, with the process and Python collectors beside them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

# Read once, as prometheus_client itself does when its first metric is built.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `_created` series would double the counters.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Requests: 0.5 ms (a warm prediction in the lane) to 10 s (Triton's deadline).
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)

# Counters by their dotted name, the key `/api/v1/engine` reports them under.
_COUNTERS: dict[str, Counter] = {}


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """`conch_<name, dots as underscores>_total`; `name` is its key in `snapshot()`."""
    family = Counter("conch_" + name.replace(".", "_"), documentation, labels)
    _COUNTERS[name] = family
    return family


M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A family's children, each bound once: `get(key, *label_values)` is one dict
    lookup after the first (the label values are read only for a new key)."""

    def __init__(self, family: M) -> None:
        self._family: M = family
        self._bound: dict[Hashable, M] = {}

    def get(self, key: Hashable, *values: str) -> M:
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = self._family.labels(*values)
        return child


# --- requests: every HTTP request, FastAPI's routes and the prediction fast lane ---
HTTP_REQUEST_SECONDS = Histogram(
    "conch_http_request_duration_seconds",
    "Requests by route template (`unmatched` for no route), method and status code; "
    "499 when the client left before an answer",
    ("route", "method", "status"),
    buckets=REQUEST_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "conch_http_requests_in_flight",
    "Requests being answered now",
    multiprocess_mode="livesum",
)

# --- Triton ---
TRITON_REQUEST_SECONDS = Histogram(
    "conch_triton_request_duration_seconds",
    "Triton inference calls by model (Triton name) and outcome (ok, error), from the "
    "control plane's side: queue, compute and transport",
    ("model", "outcome"),
    buckets=REQUEST_BUCKETS,
)

_triton_calls = Children(TRITON_REQUEST_SECONDS)


def observe_triton_call(model: str, ok: bool, seconds: float) -> None:
    _triton_calls.get((model, ok), model, "ok" if ok else "error").observe(seconds)


# --- rate limits and caches ---
RATE_LIMIT_DECISIONS = counter(
    "rate_limit.decisions", "Rate-limit answers: allowed or limited (429)", ("decision",)
)
RATE_LIMIT_ALLOWED = RATE_LIMIT_DECISIONS.labels("allowed")
RATE_LIMIT_LIMITED = RATE_LIMIT_DECISIONS.labels("limited")
RATE_LIMIT_REDIS_FALLBACK = counter(
    "rate_limit.redis_fallback", "Requests counted in-process because Redis was unreachable"
)
CACHE_LOOKUPS = counter(
    "cache.lookups",
    "In-process cache lookups by cache (api_keys, models, model_names, manifests, "
    "routing) and result (hit, miss)",
    ("cache", "result"),
)


def cache_results(cache: str) -> tuple[Counter, Counter]:
    """A cache's (hit, miss) children, bound once by the cache's module."""
    return CACHE_LOOKUPS.labels(cache, "hit"), CACHE_LOOKUPS.labels(cache, "miss")


# --- A/B traffic: the slot each project prediction was routed to ---
SLOT_SELECTIONS = counter(
    "slot.selections",
    "Project predictions by project id and the name of the slot chosen (the A/B split)",
    ("project", "slot"),
)
_slot_selections = Children(SLOT_SELECTIONS)


def count_slot_selection(project_id: int, slot_name: str) -> None:
    _slot_selections.get((project_id, slot_name), str(project_id), slot_name).inc()


# --- model lifecycle and reconciliation ---
MODEL_LOAD_SECONDS = Histogram(
    "conch_model_load_duration_seconds",
    "Model loads into Triton, warm-up included, by outcome (loaded, failed)",
    ("outcome",),
    buckets=LOAD_BUCKETS,
)
LIFECYCLE_LOADS = counter("lifecycle.loads", "Models loaded and warmed")
LIFECYCLE_MODEL_LOADS = counter("lifecycle.model_loads", "Loads by model", ("model",))
LIFECYCLE_LOAD_ERRORS = counter(
    "lifecycle.load_errors", "Loads that found Triton unreachable or too slow"
)
LIFECYCLE_LOAD_FAILURES = counter(
    "lifecycle.load_failures", "Loads Triton refused or whose warm-up failed (backoff follows)"
)
LIFECYCLE_ON_DEMAND_LOADS = counter(
    "lifecycle.on_demand_loads", "Loads a request waited for (the model was not loaded)"
)
LIFECYCLE_CONCURRENCY_REFUSALS = counter(
    "lifecycle.concurrency_refusals", "Requests refused with 503: too many inside Triton"
)
LIFECYCLE_UNLOADS = counter("lifecycle.unloads", "Models unloaded")
LIFECYCLE_UNLOAD_FAILURES = counter("lifecycle.unload_failures", "Unloads Triton refused")
LIFECYCLE_RETIRED = counter("lifecycle.retired", "Deleted models unloaded")
LIFECYCLE_EVICTIONS = counter("lifecycle.evictions", "Least recently used models evicted")
LIFECYCLE_ENGINE_CONFIG_APPLIED = counter(
    "lifecycle.engine_config_applied", "Engine configurations applied"
)
LIFECYCLE_ENGINE_RESTARTS = counter("lifecycle.engine_restarts", "Engine restarts")
LIFECYCLE_RETUNE_FAILURES = counter(
    "lifecycle.retune_failures", "Models the engine configuration could not be applied to"
)
LIFECYCLE_CACHE_CLEARS = counter("lifecycle.cache_clears", "Engine cache clears")
LIFECYCLE_TRITON_RETURNS = counter(
    "lifecycle.triton_returns", "Times Triton answered again after an outage"
)
LIFECYCLE_EVENTS = counter("lifecycle.events", "Events the reconciler acted on, by type", ("type",))
LIFECYCLE_RECONCILES = counter("lifecycle.reconciles", "Reconciliation passes completed")
LIFECYCLE_RECONCILE_ERRORS = counter("lifecycle.reconcile_errors", "Reconciliation passes failed")
RECONCILE_SECONDS = Histogram(
    "conch_reconcile_duration_seconds",
    "Reconciliation passes (SQL, Triton's index, loads started), completed or failed",
    buckets=RECONCILE_BUCKETS,
)
RECONCILE_LAST_SUCCESS = Gauge(
    "conch_reconcile_last_success_timestamp_seconds",
    "Unix time of the last completed reconciliation pass (with several workers, the "
    "oldest of them)",
    multiprocess_mode="livemin",
)

# --- events between replicas ---
EVENTS_PUBLISHED = counter("events.published", "Events published to Redis, by type", ("type",))
EVENTS_PUBLISH_ERRORS = counter("events.publish_errors", "Events Redis did not take")
EVENTS_RECEIVED = counter("events.received", "Events received from Redis, by type", ("type",))
EVENTS_DUPLICATES = counter("events.duplicates", "Events heard twice (dropped)")
EVENTS_HANDLER_ERRORS = counter("events.handler_errors", "Event handlers that raised")
EVENTS_MALFORMED = counter("events.malformed", "Messages that were no known event")
EVENTS_SUBSCRIPTIONS = counter("events.subscriptions", "Subscriptions to the events channel")
EVENTS_LISTENER_RECONNECTS = counter(
    "events.listener_reconnects", "Times the event listener lost Redis"
)

# --- async tasks (seed 002); their queue depth is read from Redis when scraped ---
TASKS_FINISHED = counter(
    "tasks.finished", "Tasks whose outcome this replica recorded, by status", ("status",)
)
TASK_REDELIVERIES = counter("task.redeliveries", "Tasks taken over from a replica that stopped")
CALLBACK_DELIVERIES = counter(
    "callback.deliveries", "Callbacks by outcome (delivered, failed)", ("outcome",)
)
CALLBACK_ATTEMPTS_FAILED = counter("callback.attempts_failed", "Callback attempts that failed")
TASK_LATENCY_SECONDS = Histogram(
    "conch_task_latency_seconds", "Tasks from queued to completed", buckets=TASK_BUCKETS
)


def value(family: Counter, **labels: str) -> float:
    """A counter's value in this process (0 for a child never counted): for tests."""
    for metric in family.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return sample.value
    return 0.0


def snapshot(*prefixes: str) -> dict[str, int]:
    """This process's counters whose dotted name starts with one of `prefixes`, as
    `name` or `name{label="value"}` (what `/api/v1/engine` reports)."""
    counts: dict[str, int] = {}
    for name, family in _COUNTERS.items():
        if not name.startswith(prefixes):
            continue
        for metric in family.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = labelled(name, **sample.labels) if sample.labels else name
                    counts[key] = int(sample.value)
    return counts


def labelled(name: str, **labels: str) -> str:
    """`name{key="value",...}`, with values escaped as Prometheus requires."""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for v in labels.values())
    pairs = ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True))
    return f"{name}{{{pairs}}}"


def exposition() -> bytes:
    """Every family in Prometheus' text format: summed over the processes of
    PROMETHEUS_MULTIPROC_DIR when set, else this process's."""
    if MULTIPROCESS_DIR is None:
        return prometheus_client.generate_latest(prometheus_client.REGISTRY)
    forget_dead_processes(MULTIPROCESS_DIR)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return prometheus_client.generate_latest(registry)


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges (requests in flight) of workers that exited without saying
    so; their counters and histograms stay in the sums, as counters must."""
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        digits = os.path.basename(path).rsplit("_", 1)[1].removesuffix(".db")
        if digits.isdigit():
            pids.add(int(digits))
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
