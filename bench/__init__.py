"""Benchmark harness: this service against a naive endpoint and the in-process limit.

Run it with ``python -m bench.run`` (or ``make bench``); see :mod:`bench.run` for options.
"""
