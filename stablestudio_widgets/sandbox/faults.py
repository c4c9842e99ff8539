"""Fault injection: the failures a real pay-per-request service shows, on demand and reproducibly.

Clients must survive transient errors *before* payment (safe to retry), ambiguous failures
*after* settlement (retry with the same signed payment, never pay twice), jobs that are not yet
visible, and jobs that fail. :class:`Faults` says how often; :class:`Dice` decides, from one
seeded ``random.Random``, so the Nth request's fate is the same in every run with the same seed.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any

ERROR_STATUSES = (429, 500, 502, 503)
DROP_MODES = ("reset", "5xx", "delay")

#: What failed jobs say, modelled on the providers behind the real service.
JOB_ERRORS = (
    "Generation failed: the provider's safety system flagged the prompt (content_policy_violation).",
    "Generation failed: upstream provider timed out after 300s (provider_timeout).",
    "Generation failed: upstream model returned HTTP 500 (provider_error).",
    "Generation failed: the provider returned no output (empty_result).",
)


@dataclass(frozen=True)
class Faults:
    """How the sandbox misbehaves. All rates are probabilities in [0, 1]; all off by default."""

    #: Job GETs (and the job list) do not show a job until this many seconds after creation.
    poll_404_s: float = 0.0
    #: Share of jobs that end ``failed`` with a realistic error string.
    fail_rate: float = 0.0
    #: Share of ``/api/`` requests answered ``error_status`` before any payment is looked at.
    error_rate: float = 0.0
    error_status: int = 503
    #: ``Retry-After`` seconds sent with 429 and 503.
    retry_after_s: int = 1
    #: Share of paid requests that settle and create their job, then fail to answer properly.
    drop_after_settle_rate: float = 0.0
    #: "reset": connection closed with no HTTP response; "5xx": a 502; "delay": answer after delay_s.
    drop_mode: str = "reset"
    delay_s: float = 2.0
    #: Oldest SIGN-IN-WITH-X ``issuedAt`` accepted, in seconds.
    siwx_max_age_s: float = 600.0
    #: Seed of the fault dice; ``None`` draws from the OS.
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("fail_rate", "error_rate", "drop_after_settle_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Faults.{name} must be between 0 and 1, got {value!r}")
        if self.error_status not in ERROR_STATUSES:
            raise ValueError(f"Faults.error_status must be one of {ERROR_STATUSES}, "
                             f"got {self.error_status!r}")
        if self.drop_mode not in DROP_MODES:
            raise ValueError(f"Faults.drop_mode must be one of {DROP_MODES}, got {self.drop_mode!r}")
        for name in ("poll_404_s", "delay_s", "siwx_max_age_s", "retry_after_s"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"Faults.{name} must not be negative")

    def replace(self, **changes: Any) -> Faults:
        """A copy with ``changes``; unknown names raise ``TypeError`` naming the valid ones."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown fault setting(s) {sorted(unknown)}; valid: "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Dice:
    """The fault decisions. Every decision point always draws exactly one number, whatever the
    rates, so changing one rate does not shift the fate of unrelated requests."""

    def __init__(self, faults: Faults):
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def error(self) -> int | None:
        """The status to answer this ``/api/`` request with instead of serving it, if any."""
        return self.faults.error_status if self._draw() < self.faults.error_rate else None

    def drop(self) -> str | None:
        """How to mangle the answer to a request that has just settled, if at all."""
        return self.faults.drop_mode if self._draw() < self.faults.drop_after_settle_rate else None

    def job_error(self) -> str | None:
        """The error a new job will end with, or ``None`` if it will complete."""
        x = self._draw()
        if x >= self.faults.fail_rate:
            return None
        return JOB_ERRORS[int(x / max(self.faults.fail_rate, 1e-12) * len(JOB_ERRORS)) % len(JOB_ERRORS)]
