"""N claimers racing over one queue never share a task."""

from collections import Counter

from reproq_runner import queries
from tests.concurrency.helpers import race

TASKS = 3000
CLAIMERS = 8


def test_every_task_is_claimed_exactly_once(conn, connect):
    cur = conn.cursor()
    for start in range(0, TASKS, 1000):
        queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [i],
                                                     priority=i % 3 - 1,
                                                     queue_name=("a", "b")[i % 2])
                                   for i in range(start, start + 1000)])

    def claimer(index, barrier):
        connection = connect()
        worker_id = f"w{index}"
        mine = []
        with connection.cursor() as cursor:
            barrier.wait()
            while True:
                tasks = queries.claim(cursor, worker_id, ["a", "b"], 1 + index % 5)
                if not tasks:
                    return mine
                mine += [t.result_id for t in tasks]
                if index % 2:  # half of them also complete, so rows churn under the others
                    queries.complete_many(cursor, [(t.result_id, t.lease_token, "1")
                                                   for t in tasks])

    claimed = race(CLAIMERS, claimer)
    counts = Counter(result_id for ids in claimed for result_id in ids)
    assert len(counts) == TASKS
    assert set(counts.values()) == {1}
    assert sum(1 for ids in claimed if ids) > 1, "the claimers did not actually overlap"
    cur.execute("select count(*), bool_and(attempts = 1 and cardinality(worker_ids) = 1)"
                " from reproq.task_runs where status in ('RUNNING', 'SUCCESSFUL')")
    assert cur.fetchone() == (TASKS, True)
