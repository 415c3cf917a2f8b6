"""Ctrl-C, SIGTERM and SIGHUP during a run: a graceful stop, then a hard one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

#: Seconds the requests in flight get to finish after a stop (Ctrl-C, SIGTERM, SIGHUP), before
#: they are cancelled: a stop never waits out a hanging request's --timeout.
STOP_GRACE = 1.0


_SIGNAL_NAMES = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGHUP": "SIGHUP: the terminal closed"}


@contextlib.contextmanager
def stop_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[str], None]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP call ``handler`` (with the signal's name for people) while
    the run lasts; the previous handlers come back after."""
    if sys.platform == "win32":  # pragma: no cover
        yield
        return
    wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved = {sig: signal.getsignal(sig) for sig in wanted}
    installed = []
    for sig in saved:
        try:
            loop.add_signal_handler(sig, handler, _SIGNAL_NAMES[sig.name])
            installed.append(sig)
        except (RuntimeError, ValueError):  # not the main thread (tests in a thread)
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, saved[sig])


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """While the results are written, one Ctrl-C, SIGTERM or SIGHUP waits for the write to
    end (the results are what a stop is for); a second one stops at once."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def held(signum: int, frame: object) -> None:
        got.append(signum)
        if len(got) > 1:
            raise KeyboardInterrupt

    wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    saved = {sig: signal.signal(sig, held) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
