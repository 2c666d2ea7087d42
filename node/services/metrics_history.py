"""A short in-memory history of the node's main metrics, so the operator console can
draw charts without a Prometheus server.

One trio task (:meth:`MetricsHistory.run`, started in the node's nursery) awaits a
sampling function every :data:`SAMPLE_INTERVAL_S` seconds (it reads the libp2p host
on the trio thread and LMDB through ``trio.to_thread``) and appends the result to a
ring buffer of
:data:`HISTORY_SAMPLES` samples. Readers either take a snapshot (the console's
``/console/metrics`` route) or wait for the next sample (its live-event stream):
:meth:`MetricsHistory.wait_after` parks on a :class:`trio.Event` that the sampler
replaces after every sample, so any number of streams follow the history without a
queue per reader and a slow reader never holds the sampler up.

A sample is a flat mapping ``series name -> float``. The sampling function decides
which series exist; a series missing from a sample is ``None`` there (a metric that
appeared later, or one that failed to read).
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from ..logs import get_logger

log = get_logger("n3xus.metrics_history")

# Every 2 s: fast enough that the console's live view (driven by these samples)
# feels immediate, slow enough that sampling (a few LMDB reads) costs nothing.
SAMPLE_INTERVAL_S = 2.0
# 900 samples x 2 s = 30 minutes of history: "what happened in the last minutes"
# without Prometheus. At a few dozen series that is well under 1 MiB.
HISTORY_SAMPLES = 900
# Sampling functions may expose every Prometheus counter and gauge; cap the series
# so a registry full of labelled metrics cannot grow the history without bound.
MAX_SERIES = 96

Sampler = Callable[[], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class Sample:
    seq: int  # 1, 2, 3, ... (0 means "before the first sample")
    time: float  # UNIX seconds
    values: dict[str, float]


class MetricsHistory:
    """Ring buffer of samples plus the task that fills it."""

    def __init__(self, sampler: Sampler, *, interval_s: float = SAMPLE_INTERVAL_S,
                 capacity: int = HISTORY_SAMPLES) -> None:
        if interval_s <= 0 or capacity < 1:
            raise ValueError("interval_s must be > 0 and capacity >= 1")
        self.interval_s = interval_s
        self.capacity = capacity
        self._sampler = sampler
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._series: list[str] = []
        self._next_seq = 1
        self._changed = trio.Event()
        # Identifies this history: sequence numbers start again at 1 when the node
        # restarts, and a client resuming with an old seq must notice.
        self.boot = secrets.token_hex(8)

    # -- writing ----------------------------------------------------------------------
    def record(self, values: dict[str, float], at: float | None = None) -> Sample:
        """Append one sample (the sampler task's step; callable directly in tests)."""
        kept: dict[str, float] = {}
        for name, value in values.items():
            if name not in self._series:
                if len(self._series) >= MAX_SERIES:
                    continue
                self._series.append(name)
            kept[name] = float(value)
        sample = Sample(self._next_seq, time.time() if at is None else at, kept)
        self._next_seq += 1
        self._samples.append(sample)
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        return sample

    async def sample_once(self) -> Sample | None:
        try:
            values = await self._sampler()
        except (OSError, ValueError, RuntimeError) as exc:
            # A metric that cannot be read now (disk error, closing store) must not
            # stop the console's charts; the gap shows as a missing sample.
            log.warning("metrics sample failed", error=str(exc))
            return None
        return self.record(values)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Sample now, then every ``interval_s``, until cancelled."""
        await self.sample_once()
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            await self.sample_once()

    # -- reading ----------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def series(self) -> list[str]:
        return list(self._series)

    def since(self, after: int = 0) -> list[Sample]:
        """Samples with ``seq > after`` still in the buffer, oldest first."""
        return [s for s in self._samples if s.seq > after]

    async def wait_after(self, after: int) -> list[Sample]:
        """Samples newer than ``after``, waiting for the next one if there are none."""
        while self.last_seq <= after:
            await self._changed.wait()
        return self.since(after)

    def columns(self, after: int = 0) -> dict[str, Any]:
        """The history as columns (what the console's charts draw)."""
        rows = self.since(after)
        return {
            "boot": self.boot,
            "interval_s": self.interval_s,
            "capacity": self.capacity,
            "last_seq": self.last_seq,
            "seq": [s.seq for s in rows],
            "time": [round(s.time, 3) for s in rows],
            "series": {name: [s.values.get(name) for s in rows] for name in self._series},
        }


def registry_values(families: Iterable[Any]) -> dict[str, float]:
    """Unlabelled counter and gauge samples of Prometheus metric families
    (``registry.collect()``), keyed by sample name (``n3xus_dials_total`` ...)."""
    out: dict[str, float] = {}
    for family in families:
        if family.type not in ("counter", "gauge"):
            continue
        for sample in family.samples:
            if sample.labels or sample.name.endswith("_created"):
                continue
            out[sample.name] = float(sample.value)
    return out
