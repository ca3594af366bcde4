"""Container healthchecks for docker-compose.yml (stdlib only, no Django start-up).

  python deploy/healthcheck.py http /readyz   # web: 200 from the app itself
  python deploy/healthcheck.py process beat   # beat: a `celery ... beat` process runs

The HTTP probe calls the app on 127.0.0.1:8000 the way the proxy does: with
a Host from ALLOWED_HOSTS (else Django answers 400) and
`X-Forwarded-Proto: https` (else, with HTTPS_ONLY, a 301 to https).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def _host() -> str:
    for host in os.environ.get("ALLOWED_HOSTS", "").split(","):
        host = host.strip().lstrip(".")
        if host and "*" not in host:
            return host
    return "localhost"


def http(path: str) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{path}",
        headers={"Host": _host(), "X-Forwarded-Proto": "https"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (fixed loopback URL)
            return response.status == 200
    except (urllib.error.URLError, OSError) as error:
        print(f"{path}: {error}", file=sys.stderr)
        return False


def process(word: str) -> bool:
    """A `celery` process (not this one) whose command line holds `word`."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        if cmdline.parent.name == str(os.getpid()):
            continue
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"celery") for arg in args) and word.encode() in args:
            return True
    return False


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in {"http", "process"}:
        sys.exit(__doc__)
    sys.exit(0 if {"http": http, "process": process}[sys.argv[1]](sys.argv[2]) else 1)
