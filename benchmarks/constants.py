"""Names shared by the benchmark process, its settings and the runners it starts (kept free of
heavy imports: every runner child imports it through benchmarks.settings)."""

ROOT_ENV = "REPROQ_BENCH_PGROOT"
DATABASE_ENV = "REPROQ_BENCH_DATABASE"
DATABASE = "reproq_bench"
PORT = 5439
