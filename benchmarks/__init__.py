"""The benchmark harness behind ``scripts/bench``: overhead, accuracy, sink, latency, scale.

Run it as ``python -m benchmarks`` from the bench virtual environment that
``scripts/bench`` creates; each part lives in its own module and returns markdown.
"""
