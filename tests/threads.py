"""Run one function from several threads at once (the concurrency tests of vitedge.load)."""

from concurrent.futures import ThreadPoolExecutor


def run_in_threads(fn, n=8):
    """Results of `fn()` run in `n` threads at once, in order; the first error is re-raised."""
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn) for _ in range(n)]
        return [f.result() for f in futures]
