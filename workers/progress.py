"""A running job's steps, off the pipeline's thread.

The pipeline calls back after every denoising step. What a step leads to
(the progress event on the job's websocket, the row's progress and lease
written every JOB_PROGRESS_WRITE_SECONDS, the look for a cancel's stop
signal, a preview made from the latents and encoded every few steps) takes
a millisecond or more, and on a GPU a step may take less. So the callback
only records the step (ProgressRelay.step: a dict entry under a lock, a few
microseconds) and a thread of the worker process does the rest for the
latest step of each job, skipping the steps it had no time for. The
callback learns the outcome (canceled, or no longer owned) from a flag the
thread sets, one step later than if it had looked itself.

A process that did not boot as a worker (tests that run jobs in place,
inside their own transaction, which another thread's connection cannot
see) relays inline: the same work, on the caller's thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import Error as DatabaseError
from django.db import connection

from generation.events import job_send
from generation.models import Job
from generation.services import job_progress
from workers.preview import data_url

log = logging.getLogger(__name__)


@dataclass
class _Step:
    job: Job
    step: int | None  # None: a preview alone (its step was served already)
    total: int
    preview: Callable[[], Any] | None = None  # makes the preview picture (or None), when called


class ProgressRelay:
    def __init__(self, *, threaded: bool) -> None:
        self.threaded = threaded
        self._lock = threading.Lock()
        self._pending: dict[Any, _Step] = {}
        self._stopped: set = set()
        self._wake = threading.Event()
        self._serving = threading.Lock()  # held while a step is served
        self._thread: threading.Thread | None = None
        self._pid = 0

    def step(self, job: Job, step: int, total: int) -> bool:
        """From the pipeline's callback: `job` reached `step` of `total`.
        False once the job must stop."""
        self._record(job, step=step, total=total)
        return _attempt(job) not in self._stopped

    def preview(self, job: Job, make: Callable[[], Any]) -> None:
        """From the pipeline's callback, after step: `make` makes a preview
        picture (or None) from this step's latents, when called."""
        self._record(job, preview=make)

    def _record(self, job: Job, *, step: int | None = None, total: int = 0, preview=None) -> None:
        if step is not None and step >= job.progress_step:
            # On the job at once: its end writes the last step seen, served or not.
            job.progress_step, job.progress_total = step, total
        if not self.threaded:
            self._serve(_Step(job, step, total, preview))
            return
        with self._lock:
            earlier = self._pending.get(job.id)
            if earlier is not None:
                # A step not served yet is replaced by the newer one; a
                # preview not made yet is kept until a newer one.
                step = earlier.step if step is None else step
                total = total or earlier.total
                preview = preview or earlier.preview
            self._pending[job.id] = _Step(job, step, total, preview)
        self._ensure_thread()
        self._wake.set()

    def stop(self, job: Job) -> None:
        """This attempt of `job` must stop (the heartbeat found it no longer
        owned). Kept by attempt: a later attempt of the job, in this process
        too, runs."""
        self._stopped.add(_attempt(job))

    def finish(self, jobs: list[Job]) -> None:
        """The run of `jobs` ended: steps of theirs not served yet are
        dropped (their end is announced next, and must come last), and a
        step being served now is waited for."""
        with self._lock:
            for job in jobs:
                self._pending.pop(job.id, None)
        with self._serving:
            pass
        for job in jobs:
            self._stopped.discard(_attempt(job))

    def idle(self, timeout: float = 5.0) -> bool:
        """Wait until every step recorded so far has been served (tests)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending and not self._serving.locked():
                    return True
            time.sleep(0.005)
        return False

    def _ensure_thread(self) -> None:
        """Started on first use, and again in a forked child (which inherits
        no running thread)."""
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="job-progress", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    item = self._pending.pop(next(iter(self._pending)))
                    self._serving.acquire()
                try:
                    self._serve(item)
                except Exception:  # never let the thread die: a later step is served again
                    log.exception("job %s: could not relay step %s", item.job.id, item.step)
                finally:
                    self._serving.release()

    def _serve(self, item: _Step) -> None:
        """What a step leads to (generation.services.job_progress: the event,
        the row when due, the stop signal when due; then the preview). A
        database outage must not end a running job: the step is logged and
        dropped, the connection reopened on the next one, and the heartbeat
        keeps the lease once the database is back."""
        job = item.job
        if item.step is not None:
            try:
                if not job_progress(job=job, step=item.step, total=item.total):
                    self._stopped.add(_attempt(job))
            except DatabaseError:
                log.warning("job %s: could not record step %s; going on", job.id, item.step, exc_info=True)
                connection.close()
        if item.preview is not None and _attempt(job) not in self._stopped:
            picture = item.preview()
            if picture is not None:
                job_send(job.id, {"type": "preview", "image": data_url(picture)})


def _attempt(job: Job) -> tuple:
    return (job.id, job.attempts)
