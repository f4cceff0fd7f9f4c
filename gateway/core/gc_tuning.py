"""Cycle-collector tuning for a long-lived server process.

`gc.freeze()` moves everything allocated at start-up (modules, the app, cached agents) out of
the collector's generations, so collections only walk what requests allocate; a larger
generation-0 threshold makes them rarer. Measured with `make bench` (see bench/README.md).
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Freeze start-up objects and raise the generation-0 threshold (0 keeps the defaults)."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 50), max(gen2, 100))
