"""The cyclic garbage collector's settings for a daemon process.

Process-wide state: only the process entry point (``raftd run``) calls these, never a
library user or a test that runs daemons in its own process.

Why: under write load each daemon allocates and frees a few objects per message, and with
Python's default threshold (a young-generation collection every 700 net allocations of
container objects) the collector ran about 4 times a second per daemon and took 1.6-2.5%
of its CPU, including one full collection of every object in the process (70-140 ms, all
of it on the event loop) per half minute. With a threshold of 7,000 most of those objects
are freed by their reference count before a collection sees them, and with the start-up
objects frozen a full collection no longer walks the modules, the libp2p host and the
groups: the collector's share fell to 0.2-0.3% (``scripts/bench put --clients 64``,
measured with ``gc.callbacks``). Garbage in cycles is still collected, a little later.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "freeze_startup_objects", "tune"]

#: Net allocations of container objects between young-generation collections.
YOUNG_THRESHOLD = 7000


def tune() -> None:
    """Set the collection thresholds (young generation: :data:`YOUNG_THRESHOLD`; the
    older generations keep Python's ratios)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_startup_objects() -> None:
    """Once the daemon serves: collect what start-up left behind, then move every object
    alive now into the permanent generation, which no collection walks again."""
    gc.collect()
    gc.freeze()
