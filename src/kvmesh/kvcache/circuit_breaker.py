"""A small circuit breaker: stop calling a backend that keeps failing.

States::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN   --(reset_interval_s elapsed, next allow())--> HALF_OPEN (one trial call)
    HALF_OPEN --success--> CLOSED      HALF_OPEN --failure--> OPEN (timer restarts)

While OPEN, callers get ``allow() == False`` at once, so a dead L2 costs
nothing per request; the one trial after each interval is how recovery is
noticed. The clock is injected so tests can drive time exactly.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Breaker states; the values are what the state gauge exports."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Thread-safe consecutive-failure breaker."""

    def __init__(
        self,
        failure_threshold: int,
        reset_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_interval_s <= 0:
            raise ValueError(f"reset_interval_s must be > 0, got {reset_interval_s}")
        self.failure_threshold = failure_threshold
        self.reset_interval_s = reset_interval_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self.times_opened = 0
        """How many times the breaker went from CLOSED to OPEN."""

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN is reported even when a trial is already due)."""
        return self._state

    def allow(self) -> bool:
        """May a call go to the backend now?

        In OPEN, the first caller after the reset interval becomes the trial.
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if (
                self._state is BreakerState.OPEN
                and self._clock() - self._opened_at >= self.reset_interval_s
            ):
                self._set(BreakerState.HALF_OPEN)
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker and reset the failure count."""
        with self._lock:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A call failed (error or deadline): count it, opening the breaker at the threshold."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                if self._state is BreakerState.CLOSED:
                    self.times_opened += 1
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
