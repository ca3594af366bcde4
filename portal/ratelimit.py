"""A fixed-window rate limit on the shared (Redis) cache.

Hand-written (a dozen lines) rather than django-ratelimit: allauth already
covers the account views, and this needs only a per-user counter that the
service layer checks, not a view decorator.
"""

from __future__ import annotations

import time

from django.core.cache import cache

_PERIODS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(rate: str) -> tuple[int, int]:
    """'20/m' -> (20, 60)."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period]


def allow(key: str, rate: str) -> bool:
    """Count one hit on `key`; False once the rate is exceeded in this window."""
    limit, period = parse_rate(rate)
    window = int(time.time() // period)
    bucket = f"rl:{key}:{window}"
    cache.add(bucket, 0, timeout=period + 1)
    return cache.incr(bucket) <= limit
