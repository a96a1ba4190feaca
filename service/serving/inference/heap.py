"""Keep full garbage collections short in a process that holds a large model.

Importing TensorFlow and loading a model leave hundreds of thousands of long-lived objects
in the collector's oldest generation; every full collection then walks all of them, which
measured about 200 ms here: every thread stops, and the requests of that moment wait.
Freezing moves the objects alive after start-up to a permanent generation the collector
never scans; what requests allocate is still collected as usual.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("mmserve.heap")


def freeze() -> int:
    """Collect, then freeze every object alive now; return how many are frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d long-lived objects out of the garbage collector's scans", frozen)
    return frozen


def refreeze() -> int:
    """After a model version is closed: unfreeze so its objects can be collected, collect
    them (one full collection), and freeze what is left."""
    gc.unfreeze()
    return freeze()
