"""One GPU per worker replica: `python -m workers.gpu_claim celery -A portal worker ...`.

`docker compose up --scale worker=N` cannot hand each replica its own GPU:
a device reservation with `count: 1` always maps to GPU 0 in Docker's
NVIDIA driver (moby's `countToDevices`), so N replicas would share one card.
The compose file therefore gives every replica all of the host's GPUs, and
this wrapper, before torch starts, takes the first GPU that no other replica
holds: an exclusive `flock` on `<lock dir>/gpu<i>.lock` in a volume that the
replicas on one host share. The lock stays open across `exec`, so it lives
exactly as long as the worker; a replica that dies frees its GPU.

Invariant: two live workers that share the lock dir never get the same index.
Stdlib only: it runs before anything else is imported.
"""

from __future__ import annotations

import fcntl
import glob
import os
import sys
from pathlib import Path

LOCK_DIR = "/var/lock/portal-gpus"


def gpu_count(dev: str = "/dev") -> int:
    """GPUs visible in this container: the NVIDIA runtime mounts /dev/nvidia<N> for each."""
    return len([p for p in glob.glob(f"{dev}/nvidia*") if Path(p).name.removeprefix("nvidia").isdigit()])


def gpu_claim(*, lock_dir: str, count: int) -> tuple[int, int]:
    """Lock the first free GPU index below `count`; returns (index, open lock fd)."""
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        fd = os.open(f"{lock_dir}/gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return index, fd
    raise RuntimeError(f"all {count} GPUs are held by other workers; scale down or add GPUs")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m workers.gpu_claim COMMAND [ARGS...]")
    count = gpu_count()
    # No GPU here (a CPU host, or CUDA_VISIBLE_DEVICES set by hand): run as is.
    if count and "CUDA_VISIBLE_DEVICES" not in os.environ:
        try:
            index, fd = gpu_claim(lock_dir=os.environ.get("GPU_LOCK_DIR", LOCK_DIR), count=count)
        except RuntimeError as error:
            sys.exit(str(error))
        os.set_inheritable(fd, True)
        # Distinct indices are distinct GPUs in any order; PCI order numbers
        # them as nvidia-smi does, so the log line below matches it.
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        print(f"gpu_claim: this worker runs on GPU {index} of {count}", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)  # noqa: S606 (the compose command, as given)


if __name__ == "__main__":
    main(sys.argv[1:])
