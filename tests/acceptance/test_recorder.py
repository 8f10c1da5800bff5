"""reproq_runner.recorder: outcomes stored by a thread on a connection of its own."""

import os

from reproq_runner import queries
from reproq_runner.database import Database
from reproq_runner.engine import Engine
from reproq_runner.outcome import Failed, Succeeded
from reproq_runner.recorder import Recorder
from tests.acceptance.conftest import enqueue, wait_for


def _recorder(dsn: str, engine: Engine) -> tuple[Recorder, int]:
    read_fd, write_fd = os.pipe()
    return Recorder(dsn, engine, prepare=True, wakeup_fd=write_fd), read_fd


def test_a_batch_is_stored_and_wakes_the_runner(dsn, cur):
    engine = Engine("recorder-test", ("default",), 60)
    ids = [enqueue(cur, "echo", [n]) for n in range(3)]
    claimed = engine.claim(cur, 3)
    recorder, wakeup = _recorder(dsn, engine)
    try:
        recorder.submit([
            (claimed[0], Succeeded("1")),
            (claimed[1], Failed({"exception_class_path": "x.Boom", "message": "boom",
                                 "traceback": ""}, retry=False)),
            (claimed[2], Succeeded('{"a":2}')),
        ])
        assert recorder.busy and not recorder.ready()
        [batch] = recorder.wait(timeout=30)
        assert os.read(wakeup, 16) == b"r"
    finally:
        recorder.close()
    assert not recorder.busy and batch.unstored == []
    assert sorted(t.result_id for r in batch.recorded for t in r.succeeded) == [ids[0], ids[2]]
    assert [(t.result_id, s) for r in batch.recorded for t, s in r.failed] == [(ids[1], "FAILED")]
    runs = [queries.get_task_run(cur, i) for i in ids]
    assert [r.status for r in runs] == ["SUCCESSFUL", "FAILED", "SUCCESSFUL"]
    assert runs[2].return_json == {"a": 2}


def test_outcomes_come_back_unstored_when_the_database_is_unreachable(dsn, cur):
    engine = Engine("recorder-test", ("default",), 60)
    enqueue(cur, "echo", [1])
    [task] = engine.claim(cur, 1)
    unreachable = "host=/nonexistent-socket-dir dbname=nothing connect_timeout=1"
    recorder, _ = _recorder(unreachable, engine)
    try:
        recorder.submit([(task, Succeeded("null"))])
        [batch] = recorder.wait(timeout=30)
        assert batch.recorded == [] and batch.unstored == [(task, Succeeded("null"))]
        assert not recorder.ready()  # backing off before the next attempt
        assert recorder.seconds_until_retry() > 0
    finally:
        recorder.close()
    assert queries.get_task_run(cur, task.result_id).status == "RUNNING"


def test_an_outcome_the_database_refuses_costs_no_other_its_own(dsn, cur):
    """A refused outcome is recorded as a failure that says so (never silently dropped: the
    heartbeat would keep its lease alive), and the rest of its batch is stored."""
    engine = Engine("recorder-test", ("default",), 60)
    ids = [enqueue(cur, "echo", [n]) for n in range(4)]
    claimed = engine.claim(cur, 4)
    recorder, _ = _recorder(dsn, engine)
    try:
        recorder.submit([
            (claimed[0], Succeeded("1")),
            (claimed[1], Succeeded("{not json")),
            (claimed[2], Succeeded("3")),
            (claimed[3], Failed({"exception_class_path": "x.Boom", "message": "a\x00b",
                                 "traceback": "line\x00"}, retry=False)),
        ])
        [batch] = recorder.wait(timeout=30)
    finally:
        recorder.close()
    assert batch.unstored == []
    runs = [queries.get_task_run(cur, i) for i in ids]
    assert [r.status for r in runs] == ["SUCCESSFUL", "FAILED", "SUCCESSFUL", "FAILED"]
    [refused] = runs[1].errors_json
    assert refused["exception_class_path"] == "reproq_runner.errors.UnstorableOutcome"
    assert "could not be stored" in refused["message"]
    [nul] = runs[3].errors_json
    assert (nul["message"], nul["traceback"]) == ("a\\x00b", "line\\x00")


def test_outcomes_come_back_unstored_while_the_database_is_read_only(dsn, cur):
    """A read-only server (a failover that reached a standby, default_transaction_read_only
    during maintenance) refuses every write whatever it carries: the outcomes are kept and
    stored once it is writable again, not recorded as unstorable nor dropped (which left a
    task that had succeeded to run out its lease and end FAILED)."""
    engine = Engine("recorder-test", ("default",), 60)
    result_id = enqueue(cur, "echo", [1])
    [task] = engine.claim(cur, 1)
    recorder, _ = _recorder(dsn, engine)
    try:
        assert recorder.db.ensure_connected()
        recorder.db.connection.execute("set default_transaction_read_only = on")
        recorder.submit([(task, Succeeded('"ok"'))])
        [batch] = recorder.wait(timeout=30)
        assert batch.recorded == [] and batch.unstored == [(task, Succeeded('"ok"'))]
        assert queries.get_task_run(cur, result_id).status == "RUNNING"
        wait_for(recorder.ready, message="the reconnect backoff")  # a new, writable connection
        recorder.submit(batch.unstored)
        [batch] = recorder.wait(timeout=30)
    finally:
        recorder.close()
    assert [t.result_id for r in batch.recorded for t in r.succeeded] == [result_id]
    run = queries.get_task_run(cur, result_id)
    assert (run.status, run.return_json, run.errors_json) == ("SUCCESSFUL", "ok", [])


class _TooBigForOneCall:
    """An engine whose record() PostgreSQL refuses with class 54 (program limit exceeded),
    as it refuses a complete_many whose JSON values total over 256 MB: for batches of more
    than one outcome, or for every success (a return value too large even alone)."""

    def __init__(self, *, even_alone: bool):
        self.engine = Engine("recorder-test", ("default",), 60)
        self.even_alone = even_alone

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def record(self, cursor, outcomes):
        too_big = self.even_alone and any(isinstance(o, Succeeded) for _, o in outcomes)
        if len(outcomes) > 1 or too_big:
            cursor.execute("do $$ begin raise exception 'total size of jsonb array elements "
                           "exceeds the maximum' using errcode = '54000'; end $$")
        return self.engine.record(cursor, outcomes)


def test_a_batch_too_large_for_postgresql_is_stored_one_by_one_not_retried_forever(dsn, cur):
    """psycopg counts class 54 an OperationalError: the recorder took it for an outage and
    sent the same batch again every few seconds, forever, holding back every later outcome
    (the tasks stayed RUNNING while the heartbeat renewed their leases)."""
    ids = [enqueue(cur, "echo", [n]) for n in range(3)]
    for even_alone, statuses in ((False, ["SUCCESSFUL"] * 3), (True, ["FAILED"] * 3)):
        engine = _TooBigForOneCall(even_alone=even_alone)
        claimed = engine.claim(cur, 3)
        recorder, _ = _recorder(dsn, engine)
        try:
            recorder.submit([(task, Succeeded(str(n))) for n, task in enumerate(claimed)])
            [batch] = recorder.wait(timeout=30)
        finally:
            recorder.close()
        assert batch.unstored == [] and recorder.db.outage_started is None
        runs = [queries.get_task_run(cur, task.result_id) for task in claimed]
        assert [r.status for r in runs] == statuses
        if even_alone:
            assert {r.errors_json[0]["exception_class_path"] for r in runs} == {
                "reproq_runner.errors.UnstorableOutcome"}
        ids += [enqueue(cur, "echo", [n]) for n in range(3)]


def test_class_54_is_an_outage_for_the_runners_own_calls(dsn):
    """A full NOTIFY queue is 54000 too: release() (which notifies) must wait for it to drain,
    as for an outage, not stop the runner; only the recorder's calls take class 54 for data
    too large to store."""
    full_queue = ("do $$ begin raise exception 'too many notifications in the NOTIFY queue' "
                  "using errcode = '54000'; end $$")
    db = Database(dsn)
    try:
        assert db.call(lambda cursor: cursor.execute(full_queue)) == (False, None)
        assert db.outage_started is not None
    finally:
        db.close()
