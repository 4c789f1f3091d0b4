"""Circuit breakers for KMS calls, one per keyring and region.

After ``BREAKER_THRESHOLD`` consecutive KMS operations that ended in ``KMSUnavailableError`` (each after
its own retries), the breaker opens: operations that need KMS in that keyring and region fail at once
with ``KMSCircuitOpenError`` instead of waiting out the timeouts again. After ``BREAKER_COOLDOWN``
seconds one trial call is let through; its outcome closes the breaker or opens it for another cooldown.
Any answer from KMS, success or refusal, counts as the service being up and resets the count. A change
to ``KMS_FIELDS`` replaces every breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from . import conf
from .conf import KeyringConfig
from .exceptions import KMSCircuitOpenError

__all__ = ["CircuitBreaker", "breaker_for"]


class CircuitBreaker:
    """Closed, open, or half open with one trial call in flight; safe to share between threads."""

    def __init__(
        self, name: str, threshold: int | None, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    def admit(self) -> None:
        """Let a KMS call through, or raise ``KMSCircuitOpenError`` at once."""
        if self.threshold is None:
            return
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if waited >= self.cooldown and not self._trial_in_flight:
                self._trial_in_flight = True  # this caller is the trial; the others keep failing fast
                return
            remaining = max(self.cooldown - waited, 0.0)
        raise KMSCircuitOpenError(
            f"KMS calls for {self.name} are suspended after {self._failures} consecutive failures; "
            f"the next trial is in {remaining:.1f}s (BREAKER_COOLDOWN)."
        )

    def record_answer(self) -> None:
        """KMS answered (with a result or a refusal): it is reachable."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        """A call ended in ``KMSUnavailableError`` after its retries."""
        if self.threshold is None:
            return
        with self._lock:
            self._failures += 1
            if self._trial_in_flight or self._failures >= self.threshold:
                self._opened_at = self._clock()
            self._trial_in_flight = False

    def record_no_call(self) -> None:
        """The call failed before reaching KMS (no credentials, say): it proves nothing either way."""
        with self._lock:
            self._trial_in_flight = False


_breakers: conf.KeyringCache[CircuitBreaker] = conf.KeyringCache()


def breaker_for(keyring: KeyringConfig, region: str) -> CircuitBreaker:
    """The breaker of ``keyring`` in ``region``; a new one whenever ``KMS_FIELDS`` changes."""
    return _breakers.get(
        keyring,
        (keyring.alias, region),
        lambda: CircuitBreaker(
            f"keyring {keyring.alias!r} in {region}", keyring.breaker_threshold, keyring.breaker_cooldown
        ),
    )
