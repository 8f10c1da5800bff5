"""The benchmark's tiny variant runs end to end, so the benchmark cannot rot.

No timing assertions: speed is shown by the figures ``make bench`` prints, never by tests. The
benchmark starts its own PostgreSQL (durable settings), independent of the test session's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Every workload of the performance issue, by the figure-key prefix it prints.
WORKLOAD_PREFIXES = ("raw.", "pgbench.", "enqueue.", "bulk.", "sql.", "drain.", "latency.",
                     "backlog.", "realistic.", "memory.")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_benchmark_runs_and_prints_every_workload(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROQ_")}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=850,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-5000:]
    figures = json.loads(out.read_text())
    keys = [figure["key"] for figure in figures]
    for prefix in WORKLOAD_PREFIXES:
        assert any(key.startswith(prefix) for key in keys), f"no {prefix}* rows:\n{report}"
    for figure in figures:
        # Each row has its measurement, or says why it could not be taken.
        assert figure["samples"] or "not built yet" in (figure["unavailable"] or ""), figure
        assert figure["key"] in result.stdout
    assert "not available: failed" not in result.stdout, report[-5000:]
