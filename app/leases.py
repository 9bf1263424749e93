"""The lease keeper: one thread per app process that renews the leases of the runs this process
is generating, and pauses the runs whose process died (their lease ran out), on any replica.

A stream renews its run's lease with every recorded step (app.runs); the keeper also renews it
between steps (a slow pace, a long first step), every third of the lease. Every lease_s it pauses
interrupted runs (storage.repository.pause_interrupted), so that no run stays "running" without
a live owner for longer than about twice the lease.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from app.services import pause_interrupted
from storage import repository as repo
from storage.db import transaction

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger("app.leases")


class LeaseKeeper:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="diffdraft-leases", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def tick(self, *, sweep: bool = True) -> None:
        """Renew this process's leases (and pause interrupted runs)."""
        streaming = self.svc.runs.streaming_ids()
        with transaction(self.svc.factory) as s:
            repo.renew_leases(s, self.svc.instance, streaming, self.svc.lease_s)
        if sweep:
            pause_interrupted(self.svc)

    def _loop(self) -> None:
        period = self.svc.lease_s / 3.0
        n = 0
        while not self._stop.wait(period):
            n += 1
            try:
                self.tick(sweep=n % 3 == 0)
            except Exception:  # noqa: BLE001 - a database hiccup: try again next period
                log.exception("lease renewal failed")
