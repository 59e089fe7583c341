"""How fastmlp's OpenMP runtime (GNU libgomp) waits at barriers, set as it loads.

libgomp reads its settings from the environment once, when it is loaded with fastmlp._core.
Its default has an idle thread spin 300,000 times (about 0.1-0.3 ms) before sleeping. On a
machine where something else competes for the cores, a spinning thread takes the time slice
of the very thread it waits for, and 2-thread training became 1.7-2.5x slower than with a
short spin, while on an idle machine a spin of 10,000 was as fast as the default and a
passive wait 1.9x slower (100-step runs of 784-256-10, interleaved; see docs/guide/threads.md,
"Busy machines").
"""
import contextlib
import os
from typing import Iterator

SPIN_COUNT = "10000"


@contextlib.contextmanager
def short_spin_waits() -> Iterator[None]:
    """Load the extension inside this block: libgomp then spins SPIN_COUNT times before it
    sleeps, unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY (theirs is kept). The
    process environment is left as it was, so no other library or child process is affected;
    if libgomp was already loaded by another module, it keeps that module's settings."""
    user_chose = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not user_chose:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        yield
    finally:
        if not user_chose:
            os.environ.pop("GOMP_SPINCOUNT", None)
