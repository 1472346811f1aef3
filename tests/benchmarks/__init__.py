"""The benchmark suite: lockapi measured side by side with the raw clients and the peer libraries.

Run it with ``python -m tests.benchmarks`` (``--quick`` for a smoke run); it starts its own servers,
measures, and writes ``docs/benchmarks.md`` with SVG plots in ``docs/img/``. Modules are named
``bench_*.py`` so pytest does not collect them; only ``test_bench_smoke.py`` is a test.
"""
