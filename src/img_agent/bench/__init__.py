"""Benchmarks (``img-agent bench``): one runner per benchmark, timing public engine and encoder calls.

Runners: :mod:`~img_agent.bench.ann_sweep` (raw faiss), :mod:`~img_agent.bench.engine_bench`,
:mod:`~img_agent.bench.ingest`, :mod:`~img_agent.bench.e2e`, :mod:`~img_agent.bench.duplicates_bench`; :mod:`~img_agent.bench.suite` runs them
all or re-renders stored results. They share :mod:`~img_agent.bench.common` and never print.
"""
