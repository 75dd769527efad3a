"""A fair share of the decoder for every request, and memory given back after large ones.

Decoding runs in threads, which cannot be pre-empted; a clip that takes 30 s to decode would hold a
decode worker for 30 s and a small clip queued behind two of them would wait a minute. Instead every
admitted request gets a thread at once, and ``decode_workers`` *turns* are passed between them:

* a request decodes only while it holds a turn; at each checkpoint (between packets, frames, clips,
  thumbnails: the ``deadline.check`` calls of :mod:`videocore.decode`) a request that has held its
  turn for a quantum (50 ms) hands it to the longest waiting one, first come first served;
* a request may hold turns for ``decode_budget_s`` in all; past that, or past its wall-clock
  deadline (``decode_timeout_s``, waiting included), it stops with :class:`DecodeTimeoutError`.

So with ``k`` requests decoding on ``n`` turns each gets about ``n / k`` of the decoder, and a small
clip's latency grows with the number of clips in progress, not with their size.

:func:`give_back_memory` returns freed heap pages to the system (glibc ``malloc_trim``), at most
every ``TRIM_INTERVAL_S``: decoded frames are large, short-lived allocations that glibc otherwise
keeps, so one burst of large requests would leave the process at its peak size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections import deque
from collections.abc import Callable

from videocore.errors import DecodeTimeoutError

__all__ = ["DecodeTurns", "Turn", "give_back_memory"]

QUANTUM_S = 0.05
TRIM_INTERVAL_S = 1.0


class DecodeTurns:
    """``slots`` turns handed out first come, first served; thread-safe."""

    def __init__(self, slots: int, quantum_s: float = QUANTUM_S) -> None:
        self.quantum_s = quantum_s
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: deque[threading.Event] = deque()

    @property
    def contended(self) -> bool:
        return bool(self._waiting)

    def acquire(self, timeout_s: float) -> bool:
        """Wait for a turn at most ``timeout_s``; False if none came."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return True
            ticket = threading.Event()
            self._waiting.append(ticket)
        if ticket.wait(max(0.0, timeout_s)):
            return True
        with self._lock:
            if ticket.is_set():  # handed over just as the wait ended
                return True
            self._waiting.remove(ticket)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # the turn passes straight to the next in line
            else:
                self._free += 1


class Turn:
    """One request's use of :class:`DecodeTurns`: a context manager whose :meth:`checkpoint` yields
    the turn after a quantum and enforces the budget and the deadline."""

    def __init__(self, turns: DecodeTurns, budget_s: float, timeout_s: float) -> None:
        self.turns = turns
        self.budget_s = budget_s
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s
        self.used_s = 0.0
        self._since: float | None = None

    def _late(self, stage: str) -> DecodeTimeoutError:
        return DecodeTimeoutError(
            f"decoding took longer than {self.timeout_s:g} s (setting decode_timeout_s) while {stage}"
        )

    def _take(self, stage: str) -> None:
        if not self.turns.acquire(self.end - time.monotonic()):
            raise self._late(f"{stage} (waiting for the decoder)")
        self._since = time.monotonic()

    def _give(self) -> None:
        if self._since is not None:
            self.used_s += time.monotonic() - self._since
            self._since = None
            self.turns.release()

    def __enter__(self) -> Turn:
        self._take("starting")
        return self

    def __exit__(self, *exc: object) -> None:
        self._give()

    def wait_outside(self, wait: Callable[[float], bool], stage: str) -> None:
        """Wait for something else (``wait(timeout_s)`` -> done?) without holding a turn: the turn is
        handed on while waiting and taken back after; the deadline still applies."""
        self._give()
        try:
            while not wait(min(self.turns.quantum_s, max(0.0, self.end - time.monotonic()))):
                if time.monotonic() > self.end:
                    raise self._late(stage)
        finally:
            self._take(stage)

    def checkpoint(self, stage: str) -> None:
        now = time.monotonic()
        held = now - self._since if self._since is not None else 0.0
        if self.used_s + held > self.budget_s:
            raise DecodeTimeoutError(
                f"decoding used more than its {self.budget_s:g} s of decoder time "
                f"(setting decode_budget_s) while {stage}"
            )
        if now > self.end:
            raise self._late(stage)
        if held >= self.turns.quantum_s and self.turns.contended:
            self._give()
            self._take(stage)


_trim_lock = threading.Lock()
_last_trim = 0.0
_libc: ctypes.CDLL | None = None
_libc_missing = False


def _malloc_trim() -> bool:
    global _libc, _libc_missing
    if _libc is None and not _libc_missing:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only
        except OSError:
            _libc = None
        _libc_missing = _libc is None
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True


def give_back_memory(force: bool = False) -> bool:
    """Return freed heap memory to the system (glibc only), at most every TRIM_INTERVAL_S."""
    global _last_trim
    with _trim_lock:
        now = time.monotonic()
        if not force and now - _last_trim < TRIM_INTERVAL_S:
            return False
        _last_trim = now
    return _malloc_trim()
