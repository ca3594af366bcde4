"""Celery tasks. Thin: each takes ids, calls a service, returns plain data.

The diffusers runtime arrives with the model-catalog issue; torch is never
imported at module level, so the web tier can import this file without it.
"""

from __future__ import annotations

import os
import socket

from celery import shared_task


@shared_task(name="workers.ping")
def ping() -> dict:
    """A round trip through the broker: which worker answered."""
    return {"pong": True, "host": socket.gethostname(), "pid": os.getpid()}
