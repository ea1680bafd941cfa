"""Stopping a driver on SIGINT (Ctrl-C) or SIGTERM: the first signal lets it record what it was
doing and stop its cluster; a second one stops the cluster at once and exits."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from astropt.cluster import Connection

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was asked to stop (SIGINT or SIGTERM). A BaseException, as KeyboardInterrupt is,
    so that `except Exception` in the code it passes through does not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def stop_on_signals(connection: Connection | None = None) -> Iterator[None]:
    """Inside this block, in the main thread, the first SIGINT or SIGTERM raises `Interrupted`
    wherever the main thread is; a second one (while the driver is still stopping) stops the
    local cluster `connection` started at once (`connection.shutdown(force=True)`: SIGKILL to
    every process of it) and exits with 128 + signal (130 for SIGINT, 143 for SIGTERM). The
    previous handlers come back when the block ends.

    Wiring in a driver::

        connection = connect(args.address)
        print(connection)
        with stop_on_signals(connection):
            try:
                result = call_interruptibly(tuner.fit)   # or trainer.fit
            except Interrupted as stop:
                ...record the unfinished cells as interrupted (resumable)...
                connection.shutdown()
                return stop.exit_code                    # sys.exit(...) by the caller
        connection.shutdown()

    Ray installs its own SIGINT handler when `Tuner.fit()` (unless TUNE_DISABLE_SIGINT_HANDLER=1)
    or Ray Train's `TorchTrainer.fit()` runs in the main thread, replacing this one: call them
    through `call_interruptibly`, which runs them in a helper thread.
    """
    signals_seen = 0

    def handle(signum: int, frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            raise Interrupted(signum)
        if connection is not None:
            connection.shutdown(force=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def call_interruptibly(work: Callable[[], T]) -> T:
    """`work()` in a daemon thread while the main thread waits for it, so that the handlers of
    `stop_on_signals` stay in force (Ray's fit() installs its own only from the main thread)
    and `Interrupted` reaches the main thread at once; `work`'s result is returned and its
    exception raised here. After an `Interrupted`, `work` runs on until the cluster stops under
    it; being a daemon, it does not keep the process alive."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name="astropt-work", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
