"""A token bucket, sans-IO: rate limits the node applies per peer (blocks served per second,
streams opened per second). Time is the caller's monotonic clock in seconds."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. :meth:`take` answers how
    long to wait before ``count`` tokens are available (0: take them now)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def take(self, count: float, now: float) -> float:
        """Take ``count`` tokens if they are there and answer 0.0; otherwise take nothing
        and answer the seconds until they will be (a count over ``burst`` never fits:
        the caller splits it)."""
        if count > self.burst:
            raise ValueError(f"{count} tokens never fit a burst of {self.burst}")
        self._refill(now)
        if self._tokens >= count:
            self._tokens -= count
            return 0.0
        return (count - self._tokens) / self.rate
