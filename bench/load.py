"""A closed-loop HTTP load generator for loopback benchmarks (no dependencies).

``concurrency`` clients each hold one keep-alive HTTP/1.1 connection and send their next
request as soon as the previous answer arrives (closed loop: the offered load is what
the server can take, so throughput and latency are measured together). The run is
bounded in time (``warmup_s + seconds``) and, optionally, in requests.

Only requests that start after the warm-up and finish inside the window count. A
request fails when its status is not 200, the connection breaks, or no answer comes
within ``timeout_s``; the client then reconnects. Raw sockets instead of an HTTP client
library: at a few hundred requests/s on two cores a library's per-request overhead
would take CPU from the server under test, and this client's is a few tens of us.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    """Length of the measuring window."""
    ok: int
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    """``"status 503"``, ``"timeout"``, ``"ConnectionResetError"``: how many of each."""
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[round(q * 10) - 1]

    def summary(self) -> dict:
        total = self.ok + self.errors
        return {
            "concurrency": self.concurrency, "seconds": round(self.seconds, 2), "requests": total, "ok": self.ok,
            "errors": self.errors, "error_rate": self.errors / total if total else 0.0,
            "error_kinds": dict(self.error_kinds), "rps": round(self.rps, 2),
            **{f"p{q}_ms": _round(self.percentile(q)) for q in (50, 95, 99)},
            "max_ms": _round(max(self.latencies_ms, default=None)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class _Connection:
    """One keep-alive connection sending ``POST path`` requests with JSON bodies."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """Send one request and read its whole answer; returns the status."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
        self.writer.write(head.encode() + body)
        status, keep_alive = await _read_response(self.reader)
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """``(status, keep_alive)`` after reading a response's head and body (sized or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


async def _client(connection: _Connection, bodies, headers: dict[str, str], window: tuple[float, float],
                  timeout_s: float, result: LoadResult, budget: list[int]) -> None:
    start, end = window
    while time.perf_counter() < end and budget[0] > 0:
        body = next(bodies)
        sent = time.perf_counter()
        counted = sent >= start
        if counted:
            budget[0] -= 1
        remaining = end - sent
        try:
            status = await asyncio.wait_for(connection.post(body, headers), timeout=min(timeout_s, remaining))
            error = None if status == 200 else f"status {status}"
        except asyncio.TimeoutError:
            connection.close()
            if timeout_s > remaining:
                return  # the window ended first: not the server's timeout
            error = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.close()
            error = type(exc).__name__
            await asyncio.sleep(0.01)  # a refusing server must not be spun on
        done = time.perf_counter()
        if not counted or done > end:
            continue
        if error is None:
            result.ok += 1
            result.latencies_ms.append((done - sent) * 1e3)
        else:
            result.errors += 1
            result.error_kinds[error] = result.error_kinds.get(error, 0) + 1


async def run_load(url: str, bodies: Sequence[bytes], *, concurrency: int, seconds: float, warmup_s: float = 1.0,
                   timeout_s: float = 30.0, max_requests: int | None = None,
                   headers: dict[str, str] | None = None) -> LoadResult:
    """Drive ``POST url`` with ``bodies`` (cycled) from ``concurrency`` closed-loop clients."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    cycle = itertools.cycle(bodies)
    now = time.perf_counter()
    window = (now + warmup_s, now + warmup_s + seconds)
    result = LoadResult(concurrency=concurrency, seconds=seconds, ok=0, errors=0, error_kinds=Counter())
    budget = [max_requests if max_requests is not None else 1 << 62]
    connections = [_Connection(parts.hostname or "127.0.0.1", parts.port or 80, path) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(_client(c, cycle, headers or {}, window, timeout_s, result, budget)
                               for c in connections))
    finally:
        for connection in connections:
            connection.close()
    if budget[0] <= 0:  # stopped by the request count: the window is as long as it took
        result.seconds = min(seconds, time.perf_counter() - window[0])
    return result
