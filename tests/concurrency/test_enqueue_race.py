"""Concurrent identical enqueues: one row with dedup, no errors without, no deadlocks."""

from reproq_runner import queries
from tests.concurrency.helpers import race

RACERS = 12
ROUNDS = 10


def test_racing_identical_enqueues_produce_one_row(conn, connect):
    connections = [connect() for _ in range(RACERS)]

    def enqueuer(index, barrier):
        ids = []
        with connections[index].cursor() as cursor:
            for round_ in range(ROUNDS):
                barrier.wait()
                ids.append(queries.enqueue(cursor, "app.tasks.t", [round_], {"same": True}))
        return ids

    results = race(RACERS, enqueuer)
    for round_ in range(ROUNDS):
        assert len({ids[round_] for ids in results}) == 1
    assert conn.execute("select count(*) from reproq.task_runs").fetchone()[0] == ROUNDS


def test_racing_enqueues_with_dedup_off_all_insert(conn, connect):
    connections = [connect() for _ in range(RACERS)]

    def enqueuer(index, barrier):
        with connections[index].cursor() as cursor:
            barrier.wait()
            return queries.enqueue(cursor, "app.tasks.t", [1], dedup=False)

    assert len(set(race(RACERS, enqueuer))) == RACERS


def test_racing_transactions_dedup_onto_the_committed_row(conn, connect):
    # Each racer enqueues inside its own open transaction; the losers wait for the winner's
    # commit and then map onto its row instead of inserting or failing.
    connections = [connect() for _ in range(RACERS)]

    def enqueuer(index, barrier):
        connection = connections[index]
        with connection.transaction(), connection.cursor() as cursor:
            barrier.wait()
            return queries.enqueue(cursor, "app.tasks.t", ["tx"])

    assert len(set(race(RACERS, enqueuer))) == 1


def test_overlapping_batches_in_opposite_orders_do_not_deadlock(conn, connect):
    connections = [connect() for _ in range(RACERS)]
    items = [queries.task_item("app.tasks.t", [i]) for i in range(300)]

    def enqueuer(index, barrier):
        batch = items if index % 2 else items[::-1]
        ids = {}
        with connections[index].cursor() as cursor:
            for _ in range(3):
                barrier.wait()
                rows = queries.enqueue_many(cursor, batch)
                ids.update({tuple(batch[r.position - 1]["spec"]["args"]): r.result_id
                            for r in rows})
        return ids

    results = race(RACERS, enqueuer)
    assert all(ids == results[0] for ids in results)
    assert conn.execute("select count(*) from reproq.task_runs").fetchone()[0] == 300
