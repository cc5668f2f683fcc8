"""The actor's Prometheus metrics, without a client library.

The same series as the Rust actor (docs/metrics.md):

| metric | type | meaning |
| --- | --- | --- |
| `flotilla_actor_env_steps_total` | counter | env steps taken |
| `flotilla_actor_episodes_total` | counter | episodes finished |
| `flotilla_actor_inference_duration_seconds` | histogram | one batched forward pass |
| `flotilla_actor_chunk_send_duration_seconds` | histogram | handing one chunk to the stream until accepted |
| `flotilla_actor_policy_version` | gauge | version the actor acts with |
| `flotilla_actor_reconnects_total` | counter | reconnections to the learner |
| `flotilla_actor_policy_wait_seconds` | histogram | one wait for a newer policy after its share of chunks (a batch's worth or the learner's advice) |

They are always counted (a few additions under a lock); `serve` exposes them
in Prometheus' text format on `/metrics` from a small HTTP server thread.
"""

from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Buckets of the actor's histograms, seconds (the Rust actor's).
LATENCY_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


class _Metric:
    def __init__(self, registry: "Registry", name: str, help: str, kind: str):
        self.name, self.help, self.kind = name, help, kind
        self._lock = registry.lock
        registry.metrics.append(self)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    def __init__(self, registry: "Registry", name: str, help: str):
        super().__init__(registry, name, help, "counter")
        self.value = 0.0

    def inc(self, by: float = 1.0) -> None:
        with self._lock:
            self.value += by

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_number(self.value)}"]


class Gauge(_Metric):
    def __init__(self, registry: "Registry", name: str, help: str):
        super().__init__(registry, name, help, "gauge")
        self.value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self.value = value

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_number(self.value)}"]


class Histogram(_Metric):
    def __init__(self, registry: "Registry", name: str, help: str, buckets=LATENCY_BUCKETS):
        super().__init__(registry, name, help, "histogram")
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        with self._lock:
            for i, le in enumerate(self.buckets):
                if value <= le:
                    self.counts[i] += 1
                    break
            self.sum += value
            self.count += 1

    def render(self) -> list[str]:
        # Nothing observed yet: not exported, as the Rust exporter does.
        if self.count == 0:
            return []
        lines = self.header()
        cumulative = 0
        for le, c in zip(self.buckets, self.counts):
            cumulative += c
            lines.append(f'{self.name}_bucket{{le="{_number(le)}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_number(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Registry:
    """A set of metrics rendered together."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: list[_Metric] = []

    def render(self) -> str:
        with self.lock:
            lines = [line for m in self.metrics for line in m.render()]
        return "\n".join(lines) + "\n"


class ActorMetrics:
    """The actor's series."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.env_steps = Counter(r, "flotilla_actor_env_steps_total", "Environment steps taken.")
        self.episodes = Counter(r, "flotilla_actor_episodes_total", "Episodes finished.")
        self.inference = Histogram(r, "flotilla_actor_inference_duration_seconds", "One batched forward pass.")
        self.chunk_send = Histogram(
            r,
            "flotilla_actor_chunk_send_duration_seconds",
            "Handing one chunk to the stream until accepted.",
        )
        self.policy_version = Gauge(r, "flotilla_actor_policy_version", "Policy version the actor acts with.")
        self.reconnects = Counter(r, "flotilla_actor_reconnects_total", "Reconnections to the learner.")
        self.policy_wait = Histogram(
            r,
            "flotilla_actor_policy_wait_seconds",
            "One wait for a newer policy after acting its share of chunks with one version.",
        )


def parse_listen(addr: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` as (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def serve(registry: Registry, addr: str) -> ThreadingHTTPServer:
    """Serves `registry` on `http://addr/metrics` from a daemon thread and
    returns the server (its `server_address` holds the bound port)."""
    host, port = parse_listen(addr)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = registry.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # scrapes are not news
            pass

    import socket

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
