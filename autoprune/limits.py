"""Time and memory limits for work that runs in this process: Torch-Pruning's tracing
and surgery, at set-up and in each trial.

The model is too costly to ship to a child process, so the limits are this process's
own: SIGALRM for time (it interrupts Python code and sleeps, which is where a tracing
hang spins; only the main thread can take signals, elsewhere there is no time limit)
and a temporary ``RLIMIT_AS`` for memory (an allocation past it fails with
``MemoryError`` or torch's "can't allocate memory" instead of the kernel killing the
machine's largest process).
"""

from __future__ import annotations

import contextlib
import resource
import signal
import threading
from collections.abc import Iterator


# Tracing any torchvision classifier that Torch-Pruning can trace took under 1 s on a
# 2-core machine (64x64 input); the ones it cannot trace spin or grow without end.
SETUP_TIMEOUT_S = 60.0


class LimitExceeded(Exception):
    """A limited block ran out of time or memory; the message names the limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str, setting: str = "space key prune_timeout_s") -> Iterator[None]:
    """Raise TimeoutError in this thread after ``seconds``."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum, frame):
        raise TimeoutError(f"{what} did not finish within {seconds:g} s ({setting})")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_space() -> int:
    """This process's virtual size in bytes (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def memory_limit(extra_bytes: int | None, what: str, setting: str) -> Iterator[None]:
    """Let the block grow this process by at most ``extra_bytes`` of address space.

    Raises:
        LimitExceeded: an allocation inside the block failed against the limit.
    """
    now = _address_space()
    if not extra_bytes or not now:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = now + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    except MemoryError:
        raise LimitExceeded(f"{what} needed more than {extra_bytes / 2**30:.3g} GiB ({setting})") from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            raise LimitExceeded(f"{what} needed more than {extra_bytes / 2**30:.3g} GiB ({setting})") from None
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def default_setup_memory_gb() -> float:
    """Half of the memory available now: set-up may not take the machine."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if ":" in line}
        return round(info["MemAvailable"] / 2**20 / 2, 1)
    except (OSError, KeyError, ValueError, IndexError):
        return 8.0
