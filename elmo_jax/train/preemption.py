"""Preemption: SIGTERM or SIGINT asks the run to stop at the next step boundary, save and exit 0.

    with PreemptionGuard() as guard:
        for step in ...:
            ...
            if stop_now(guard.requested):   # see "Multi-host" below
                save checkpoint; break

The handlers only set a flag (nothing else is safe inside a signal handler while XLA and Orbax
threads run); the loop polls `requested` once per step. A second SIGINT while stopping raises
KeyboardInterrupt as usual, so Ctrl-C twice still force-quits (the last complete checkpoint is
kept: Orbax's saves are atomic). A second SIGTERM is only noted: schedulers (Slurm, Kubernetes,
Cloud TPU maintenance) may send it more than once and follow up with SIGKILL after their grace
period, and a forced exit in the middle of the final save would only lose it. The previous
handlers are restored when the guard exits. Signals are delivered to the main thread, so the
guard must be entered there (elsewhere it is a no-op that never requests a stop).

Multi-host: each host receives its own signal at its own moment (or not at all), so a per-host
flag alone would let host A stop at step 100 and host B run on into step 101's collectives and
hang. The decision must be the same on every host at the same step. The training loop makes it
so without an extra collective: each host feeds `float(guard.requested)` into the compiled train
step as a tiny per-host input (one value per host, sharded over the hosts), the step reduces it
with a max over all devices and returns it among its metrics, and the loop stops after the step
whose metrics say 1. Every host reads the same metrics of the same step, so all stop together,
and a signal received by any one host stops the whole job.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
    """Context manager: SIGTERM/SIGINT set `requested` instead of killing the process."""

    def __init__(self, signals: tuple = SIGNALS, announce: bool = True):
        self.signals = tuple(signals)
        self.announce = announce
        self._previous: dict[int, Any] = {}
        self._signal: Optional[int] = None
        self._time: Optional[float] = None
        self._installed = False

    # ------------------------------------------------------------------ state
    @property
    def requested(self) -> bool:
        """True once a stop was requested on this host (a signal, or `request()`)."""
        return self._signal is not None

    @property
    def signal_name(self) -> Optional[str]:
        """'SIGTERM' / 'SIGINT' (or 'request'), None when nothing was requested."""
        if self._signal is None:
            return None
        return "request" if self._signal == 0 else signal.Signals(self._signal).name

    @property
    def requested_at(self) -> Optional[float]:
        """time.time() of the first request."""
        return self._time

    def request(self) -> None:
        """Ask for a stop without a signal (tests; a loop's own reasons)."""
        if self._signal is None:
            self._signal, self._time = 0, time.time()

    # ------------------------------------------------------------------ handlers
    def _handle(self, signum: int, frame) -> None:
        if self._signal is not None:
            if signum == signal.SIGINT:  # second Ctrl-C: force quit
                raise KeyboardInterrupt
            return
        self._signal, self._time = signum, time.time()
        if self.announce:
            try:
                print(f"\nelmo-jax: received {signal.Signals(signum).name}: stopping after this step, "
                      "saving a checkpoint (Ctrl-C again quits without saving)", file=sys.stderr, flush=True)
            except Exception:  # stderr closed: the flag is what matters
                pass

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            self._previous.clear()
            self._installed = False
