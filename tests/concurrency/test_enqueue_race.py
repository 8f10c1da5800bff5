"""Concurrent identical enqueues: one row with dedup, no errors without, no deadlocks."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from reproq_runner import queries
from tests.concurrency.helpers import race
from tests.waiting import wait_for

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


def test_a_duplicate_enqueue_in_an_open_transaction_does_not_hold_up_the_running_task(connect):
    """Since 0006 a dedup hit takes no row lock: while another transaction that mapped onto a
    RUNNING task stays open, that task's worker still heartbeats and completes it (before, both
    waited for that transaction; here they would hit the 1 s lock_timeout)."""
    worker = connect()
    enqueuer = connect()
    with worker.cursor() as cur:
        result_id = queries.enqueue(cur, "app.tasks.t", [1])
        [task] = queries.claim(cur, "w", ["default"], 1, 60)
        cur.execute("set lock_timeout = '1s'")
    enqueuer.execute("begin")
    with enqueuer.cursor() as cur:
        assert queries.enqueue(cur, "app.tasks.t", [1]) == result_id
        [hit] = queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [1]),
                                           queries.task_item("app.tasks.t", [2])])[:1]
        assert (hit.result_id, hit.created) == (result_id, False)
    try:
        with worker.cursor() as cur:
            queries.heartbeat(cur, "w", 60, held=[result_id])
            assert queries.complete_many(cur, [(result_id, task.lease_token, "1")]) == {result_id}
    finally:
        enqueuer.execute("rollback")
    with worker.cursor() as cur:
        assert queries.get_task_run(cur, result_id).status == "SUCCESSFUL"


def test_long_multibyte_queue_names_do_not_break_the_notification(conn, connect):
    """Ten queues of 200 four-byte characters: the payload is cut by bytes, at whole names
    (before 0006 it was cut at 7000 characters and PostgreSQL refused the call, 22023)."""
    listener = connect()
    listener.execute("listen reproq")
    queues = [chr(0x1F600 + i) * 200 for i in range(10)]
    with conn.cursor() as cur:
        rows = queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [i], queue_name=q)
                                          for i, q in enumerate(queues)])
    assert all(row.created for row in rows)
    [note] = list(listener.notifies(timeout=5, stop_after=1))
    names = note.payload.split(",")
    assert len(note.payload.encode()) <= 7000 and names and set(names) <= set(queues)


def _hold_inserts_after_their_statement(conn):
    """A statement-level AFTER INSERT trigger on reproq.task_runs that waits for advisory lock
    4242: it fires after an insert that met an existing row too (DO NOTHING inserts none), so an
    enqueue stops between its insert and the read that maps the item onto the row it met."""
    conn.execute("create function public.wait_for_test() returns trigger language plpgsql"
                 " as $$ begin perform pg_advisory_xact_lock_shared(4242); return null; end $$")
    conn.execute("create trigger hold_inserts after insert on reproq.task_runs"
                 " for each statement execute function public.wait_for_test()")


def _waiting_on_the_advisory_lock(conn) -> bool:
    return conn.execute("select exists (select from pg_locks where locktype = 'advisory'"
                        " and database = (select oid from pg_database"
                        "                 where datname = current_database())"
                        " and objid = 4242 and not granted)").fetchone()[0]


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many"])
def test_a_dedup_hit_whose_task_finishes_before_it_is_read_is_inserted_afresh(connect, how):
    """The retry round of 0006's lockless dedup: the insert meets a RUNNING task, which
    completes before the enqueue reads its id; the enqueue then inserts a new task instead of
    mapping onto a finished one or returning nothing."""
    # A regression that makes the completion wait for the held enqueue would otherwise hang the
    # test: PostgreSQL sees no deadlock, the cycle goes through this test's thread.
    worker = connect(options="-c statement_timeout=10s")
    gate, enqueuer = connect(), connect()
    with worker.cursor() as cur:
        first = queries.enqueue(cur, "app.tasks.t", [1])
        [task] = queries.claim(cur, "w", ["default"], 1, 60)
    _hold_inserts_after_their_statement(worker)
    gate.execute("select pg_advisory_lock(4242)")

    def enqueue_again():
        with enqueuer.cursor() as cur:
            if how == "enqueue":
                return queries.enqueue(cur, "app.tasks.t", [1]), True
            [row] = queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [1])] * 2)[:1]
            return row.result_id, row.created

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(enqueue_again)
        try:
            wait_for(lambda: _waiting_on_the_advisory_lock(worker), message="the held insert")
            with worker.cursor() as cur:
                assert queries.complete_many(cur, [(first, task.lease_token, "1")]) == {first}
        finally:
            gate.execute("select pg_advisory_unlock(4242)")
        again, created = pending.result(timeout=30)
    assert again != first and created
    with worker.cursor() as cur:
        assert queries.get_task_run(cur, first).status == "SUCCESSFUL"
        assert queries.get_task_run(cur, again).status == "READY"
        cur.execute("select count(*) from reproq.task_runs")
        assert cur.fetchone()[0] == 2
