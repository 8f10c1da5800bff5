"""reproq's benchmark suite: ``python -m benchmarks.run`` (``make bench``).

It starts its own PostgreSQL with durable settings, measures raw-SQL baselines and reproq's
workloads on that one cluster in the same run, and prints medians, ranges, ratios to the
baselines and the targets of the performance issue. See docs/benchmarks.md.
"""
