"""Benchmark harness: this service against the HTTP floor, a naive endpoint, peer servers
(mosec, MLServer) and the in-process limit, driven by wrk when it is installed.

Run it with ``python -m bench.run`` (or ``make bench``); see :mod:`bench.run` for options.
"""
