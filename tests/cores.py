"""How many threads a test asks of a runtime: the cores its xdist worker is pinned to (conftest.py).

More than the worker's share oversubscribes its core (the other worker has the other one): ONNX
Runtime's spinning pool with 2 threads on 1 pinned core ran vit-tiny at batch 32 in 72.6 ms
against 40.2 ms with 1 thread (measured 2026-12-05, `taskset -c 0`). Tests *about* thread counts
(caps, thread pools, throughput sweeps) take the `all_cores` fixture or name their count instead.
"""

from __future__ import annotations

import os

# conftest.py pins the worker when it is imported, before any test module imports this one
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

# For exports whose subject is not the timing: artifact and reference timed in the test's own
# process (`vitedge export --timing interleaved`), not in two spawned ones with the device profile
# (31 isolated exports spent 105 s in that stage in one traced run, 2026-12-05). The plugin and
# device-profile tests keep the default isolated timing, and so do the shared bundles of the first
# target of each runtime (tests/shared_bundles.isolated_timing), where the contract test checks it.
INTERLEAVED = ("--timing", "interleaved")
