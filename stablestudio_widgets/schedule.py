"""When to poll a job: soon after it can be done, without hammering an unreliable service."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from .catalog import Route


def next_delay(route: Route, elapsed: float, scale: float) -> float:
    """Seconds to the next poll: first near the route's typical time, then briskly around it,
    then at the service's recommended interval (3 s images, 10 s videos)."""
    typical = route.typical_s * scale
    interval = route.poll_interval_s * scale
    if elapsed < 0.9 * typical:
        return min(0.9 * typical - elapsed, max(interval, 0.25 * typical)) or interval
    if elapsed < 2 * typical:
        return min(interval, max(interval / 3, 0.1 * typical))
    return interval


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None
