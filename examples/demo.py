"""``make demo``: reproq end to end on a PostgreSQL the project starts under .reproq/.

1. start the embedded cluster (unix socket, data under .reproq/pg) and create the database;
2. apply reproq's SQL (``manage.py reproq migrate-worker``, then ``manage.py migrate`` — in this
   order, which the system reproq replaces could not do);
3. enqueue tasks: through Django's ``task.enqueue()`` and with plain ``psql``;
4. run the runner until the queue is drained;
5. print each task's status and return value, then stop the cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.settings")

from examples.settings import DEMO_CLUSTER, REPO_ROOT  # noqa: E402
from reproq_runner import queries  # noqa: E402

DATABASE = "reproq_demo"
PSQL_ENQUEUE = (
    "select reproq.enqueue('examples.demo_app.tasks.send_welcome_email', "
    "'{\"args\": [7], \"kwargs\": {\"subject\": \"Hello from psql\"}}'::jsonb, "
    "p_queue => 'emails');"
)


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def start_cluster() -> None:
    step(f"starting PostgreSQL in {DEMO_CLUSTER.root.relative_to(REPO_ROOT)} "
         f"(socket {DEMO_CLUSTER.socket_dir.relative_to(REPO_ROOT)})")
    DEMO_CLUSTER.start()
    with psycopg.connect(DEMO_CLUSTER.dsn(), autocommit=True) as conn, conn.cursor() as cur:
        queries.drop_database(cur, DATABASE)  # every demo starts from an empty queue
        queries.create_database(cur, DATABASE)


def manage(*args: str) -> None:
    print("$ manage.py", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "django", *args], check=True, cwd=REPO_ROOT)


def enqueue_with_django() -> list[str]:
    import django

    django.setup()
    from examples.demo_app.tasks import add, send_welcome_email

    results = [add.enqueue(2, 3), send_welcome_email.enqueue(42)]
    for result in results:
        print(f"enqueued {result.task.name} through Django: id {result.id}")
    return [result.id for result in results]


def enqueue_with_psql() -> str:
    command = [str(DEMO_CLUSTER.pg_bin / "psql"), DEMO_CLUSTER.dsn(DATABASE), "-qAt",
               "-c", PSQL_ENQUEUE]
    print("$ psql -c", PSQL_ENQUEUE, flush=True)
    result_id = subprocess.run(command, capture_output=True, text=True,
                               check=True).stdout.strip()
    print(f"enqueued with psql: id {result_id}")
    return result_id


def run_runner_until_drained() -> None:
    manage("reproq", "worker", "--burst", "--queues", "default,emails")


def print_results(result_ids: list[str]) -> None:
    from django.tasks import default_task_backend

    print(f"{'id':>4}  {'task':<45} {'status':<11} return value")
    for result_id in result_ids:
        result = default_task_backend.get_result(result_id)
        value = result.return_value if result.is_finished and not result.errors else "-"
        print(f"{result.id:>4}  {result.task.module_path:<45} {result.status:<11} {value!r}")


def main() -> int:
    if "--stop" in sys.argv:
        DEMO_CLUSTER.stop()
        return 0
    try:
        start_cluster()  # inside: a failed database creation stops the server too
        step("applying reproq's SQL migrations")
        manage("reproq", "migrate-worker")
        manage("migrate", "--verbosity", "0")
        step("enqueueing")
        result_ids = enqueue_with_django()
        result_ids.append(enqueue_with_psql())
        step("running the runner until the queue is drained")
        run_runner_until_drained()
        step("results")
        print_results(result_ids)
    finally:
        step("stopping PostgreSQL")
        DEMO_CLUSTER.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
