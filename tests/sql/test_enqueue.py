"""reproq.enqueue and reproq.enqueue_many, called through psycopg only."""

from datetime import UTC, datetime, timedelta

import pytest

from reproq_runner import queries
from reproq_runner.errors import InvalidArgument, InvalidSpec, InvalidTaskPath


def count_rows(cur):
    cur.execute("select count(*) from reproq.task_runs")
    return cur.fetchone()[0]


def test_enqueue_from_psql_with_named_parameters(cur):
    cur.execute("""select reproq.enqueue('myapp.tasks.send_email', '{"args":[1],"kwargs":{}}'::jsonb,
                   p_queue => 'emails')""")
    result_id = cur.fetchone()[0]
    run = queries.get_task_run(cur, result_id)
    assert (run.task_path, run.queue_name, run.status) == ("myapp.tasks.send_email", "emails", "READY")
    assert run.spec_json == {"args": [1], "kwargs": {}}
    assert run.attempts == 0 and run.worker_ids == [] and run.errors_json == []
    assert run.run_after == run.enqueued_at


def test_identical_spec_is_deduplicated_while_ready(cur):
    first = queries.enqueue(cur, "app.tasks.t", [1], {"a": {"y": 1, "x": 2}})
    second = queries.enqueue(cur, "app.tasks.t", [1], {"a": {"x": 2, "y": 1}})
    assert first == second
    assert count_rows(cur) == 1


def test_dedup_distinguishes_queue_args_and_path(cur):
    ids = {
        queries.enqueue(cur, "app.tasks.t", [1]),
        queries.enqueue(cur, "app.tasks.t", [2]),
        queries.enqueue(cur, "app.tasks.t", [1], queue_name="other"),
        queries.enqueue(cur, "app.tasks.u", [1]),
    }
    assert len(ids) == 4


def test_dedup_off_inserts_new_rows_without_error(cur):
    first = queries.enqueue(cur, "app.tasks.t", [1], dedup=False)
    second = queries.enqueue(cur, "app.tasks.t", [1], dedup=False)
    third = queries.enqueue(cur, "app.tasks.t", [1])
    fourth = queries.enqueue(cur, "app.tasks.t", [1], dedup=False)
    assert len({first, second, third, fourth}) == 4


def test_finished_task_no_longer_dedups(cur):
    first = queries.enqueue(cur, "app.tasks.t", [1])
    [task] = queries.claim(cur, "w", ["default"])
    queries.complete(cur, task.result_id, task.lease_token, 1)
    assert queries.enqueue(cur, "app.tasks.t", [1]) != first


def test_running_task_still_dedups(cur):
    first = queries.enqueue(cur, "app.tasks.t", [1])
    queries.claim(cur, "w", ["default"])
    assert queries.enqueue(cur, "app.tasks.t", [1]) == first


def test_psql_and_python_enqueues_share_one_spec_hash(cur):
    python_id = queries.enqueue(cur, "app.tasks.t", [1, "x"], {"k": [True, None]})
    cur.execute("""select reproq.enqueue('app.tasks.t',
                   '{"kwargs": {"k": [true, null]},   "args": [1, "x"]}')""")
    assert cur.fetchone()[0] == python_id


def test_enqueue_many_maps_positions_and_dedups_within_the_call(cur):
    existing = queries.enqueue(cur, "app.tasks.t", [0])
    rows = queries.enqueue_many(cur, [
        queries.task_item("app.tasks.t", [1]),
        queries.task_item("app.tasks.t", [0]),
        queries.task_item("app.tasks.t", [1]),
        queries.task_item("app.tasks.t", [1], dedup=False),
    ])
    assert [r.position for r in rows] == [1, 2, 3, 4]
    assert rows[0].created and rows[0].result_id == rows[2].result_id and not rows[2].created
    assert rows[1].result_id == existing and not rows[1].created
    assert rows[3].created and rows[3].result_id not in {rows[0].result_id, existing}
    assert count_rows(cur) == 3


def test_enqueue_many_with_dedup_off_inserts_every_item(cur):
    rows = queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [1])] * 5, dedup=False)
    assert len({r.result_id for r in rows}) == 5 and all(r.created for r in rows)


def test_enqueue_many_is_all_or_nothing(cur):
    items = [queries.task_item("app.tasks.t", [i]) for i in range(10)]
    items.append(queries.task_item("app.tasks.t", [99], priority=101))
    with pytest.raises(InvalidArgument, match=r"task 11: priority"):
        queries.enqueue_many(cur, items)
    assert count_rows(cur) == 0


def test_options_are_stored(cur):
    run_after = datetime(2030, 1, 1, tzinfo=UTC)
    result_id = queries.enqueue(
        cur, "app.tasks.t", queue_name="q", priority=-100, run_after=run_after, max_attempts=7,
        timeout_seconds=5, lock_key="k", concurrency_key="c", concurrency_limit=2,
        expires_at=run_after + timedelta(days=1), metadata={"m": 1},
    )
    run = queries.get_task_run(cur, result_id)
    assert (run.priority, run.run_after, run.max_attempts, run.timeout_seconds) == (
        -100, run_after, 7, 5)
    assert (run.lock_key, run.concurrency_key, run.concurrency_limit) == ("k", "c", 2)
    assert run.expires_at == run_after + timedelta(days=1) and run.metadata_json == {"m": 1}


def test_injected_clock_sets_enqueued_at(cur):
    now = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    run = queries.get_task_run(cur, queries.enqueue(cur, "app.tasks.t", now=now))
    assert run.enqueued_at == now and run.run_after == now


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"task_path": ""}, InvalidTaskPath, "dotted import path"),
    ({"task_path": "nodots"}, InvalidTaskPath, "dotted import path"),
    ({"task_path": "a.b; drop"}, InvalidTaskPath, "dotted import path"),
    ({"priority": 101}, InvalidArgument, "priority"),
    ({"priority": -101}, InvalidArgument, "priority"),
    ({"max_attempts": 0}, InvalidArgument, "max_attempts"),
    ({"max_attempts": -1}, InvalidArgument, "max_attempts"),
    ({"timeout_seconds": 0}, InvalidArgument, "timeout_seconds"),
    ({"queue_name": ""}, InvalidArgument, "queue_name"),
    ({"concurrency_limit": 2}, InvalidArgument, "concurrency_key"),
    ({"lock_key": ""}, InvalidArgument, "lock_key"),
])
def test_bad_input_raises_a_named_error_and_writes_nothing(cur, kwargs, error, match):
    kwargs = {"task_path": "app.tasks.t", **kwargs}
    with pytest.raises(error, match=match):
        queries.enqueue(cur, **kwargs)
    assert count_rows(cur) == 0


@pytest.mark.parametrize("spec", [
    '{"args": {}, "kwargs": {}}',
    '{"args": []}',
    '{"args": [], "kwargs": []}',
    '{"args": [], "kwargs": {}, "extra": 1}',
    '[]',
])
def test_malformed_spec_envelope_is_refused(cur, spec):
    with pytest.raises(InvalidSpec, match="spec must be exactly"):
        queries._execute(cur, "select reproq.enqueue('app.tasks.t', %s::jsonb)", (spec,))
    assert count_rows(cur) == 0


def test_unknown_field_in_batch_item_is_refused(cur):
    with pytest.raises(InvalidArgument, match=r"unknown task field\(s\) 'queue'"):
        queries.enqueue_many(cur, [{"task_path": "app.tasks.t",
                                    "spec": {"args": [], "kwargs": {}}, "queue": "x"}])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nul\x00byte"])
def test_values_jsonb_refuses_are_rejected_before_the_database(cur, value):
    with pytest.raises(InvalidSpec, match="not storable as JSON"):
        queries.enqueue(cur, "app.tasks.t", [value])
    assert count_rows(cur) == 0


def test_one_notification_per_call(conn, connect):
    listener = connect()
    listener.execute("listen reproq")
    queries.enqueue_many(conn.cursor(), [queries.task_item("app.tasks.t", [i], queue_name=q)
                                         for i in range(50) for q in ("a", "b")])
    notifies = list(listener.notifies(timeout=0.5))
    assert len(notifies) == 1
    assert set(notifies[0].payload.split(",")) == {"a", "b"}


@pytest.mark.parametrize(("field", "value", "match"), [
    ("run_after", "2030-01-01T00:00:00", "time zone offset"),
    ("expires_at", "tomorrow", "time zone offset"),
    ("priority", "5", "must be numbers"),
    ("dedup", "yes", "dedup must be true or false"),
    ("queue_name", 7, "must be strings"),
    ("metadata", [], "metadata must be a JSON object"),
])
def test_batch_items_must_have_the_documented_json_types(cur, field, value, match):
    item = {"task_path": "app.tasks.t", "spec": {"args": [], "kwargs": {}}, field: value}
    with pytest.raises(InvalidArgument, match=match):
        queries.enqueue_many(cur, [queries.task_item("app.tasks.t", [0]), item])
    assert count_rows(cur) == 0


def test_batch_timestamps_with_an_offset_are_taken_as_given(cur):
    [row] = queries.enqueue_many(cur, [{"task_path": "app.tasks.t",
                                        "spec": {"args": [], "kwargs": {}},
                                        "run_after": "2030-01-01T02:00:00+02:00"}])
    assert queries.get_task_run(cur, row.result_id).run_after == datetime(2030, 1, 1, tzinfo=UTC)


def test_enqueue_one_returns_the_row_it_mapped_to(cur):
    now = datetime(2001, 2, 3, tzinfo=UTC)
    first = queries.enqueue_one(cur, "app.tasks.t", [1], now=now)
    again = queries.enqueue_one(cur, "app.tasks.t", [1], now=now + timedelta(seconds=5))
    assert (first.position, first.created, first.enqueued_at) == (1, True, now)
    assert (again.result_id, again.created, again.enqueued_at) == (first.result_id, False, now)
    assert count_rows(cur) == 1


def test_enqueue_one_notifies_only_when_it_inserted(conn, connect):
    listener = connect()
    listener.execute("listen reproq")
    queries.enqueue_one(conn.cursor(), "app.tasks.t", [1], queue_name="q1")
    queries.enqueue_one(conn.cursor(), "app.tasks.t", [1], queue_name="q1")
    assert [n.payload for n in listener.notifies(timeout=0.5)] == ["q1"]


def test_enqueue_one_refuses_bad_input_like_enqueue(cur):
    with pytest.raises(InvalidArgument, match="priority"):
        queries.enqueue_one(cur, "app.tasks.t", priority=500)
    assert count_rows(cur) == 0


IMPOSSIBLE_TIMESTAMPS = [
    ("run_after", "2030-02-30T00:00:00Z", "date/time field value out of range"),
    ("run_after", "2031-02-29 12:00+01:00", "date/time field value out of range"),
    ("run_after", "2030-13-01T00:00:00Z", "date/time field value out of range"),
    ("run_after", "0000-01-01T00:00:00Z", "date/time field value out of range"),
    ("expires_at", "2030-01-01T25:00:00Z", "date/time field value out of range"),
    ("expires_at", "2030-01-01T23:61:00Z", "date/time field value out of range"),
    ("expires_at", "2030-01-01T00:00:00+16:00", "time zone displacement out of range"),
]


@pytest.mark.parametrize(("field", "value", "problem"), IMPOSSIBLE_TIMESTAMPS)
@pytest.mark.parametrize("position", [1, 2])
def test_impossible_batch_timestamps_are_refused_naming_the_item(cur, field, value, problem,
                                                                 position):
    bad = {**queries.task_item("app.tasks.t", [1]), field: value}
    items = [bad] if position == 1 else [queries.task_item("app.tasks.t", [0]), bad]
    with pytest.raises(InvalidArgument) as info:
        queries.enqueue_many(cur, items)
    assert info.value.sqlstate == "RQ003"
    assert str(info.value) == (
        f'task {position}: {field} must be a valid date and time, got "{value}" ({problem})')
    assert count_rows(cur) == 0


def test_the_first_item_with_an_impossible_timestamp_is_named(cur):
    items = [queries.task_item("app.tasks.t", [i], run_after="2030-01-01T00:00:00Z",
                               expires_at="2030-01-02T00:00:00Z") for i in range(5)]
    items[3]["expires_at"] = "2030-04-31T00:00:00Z"
    items[4]["run_after"] = "2030-04-31T00:00:00Z"
    with pytest.raises(InvalidArgument, match=r'^task 4: expires_at .* got "2030-04-31T00:00:00Z"'):
        queries.enqueue_many(cur, items)
    assert count_rows(cur) == 0


def test_other_problems_of_a_batch_are_reported_before_an_impossible_timestamp(cur):
    items = [{**queries.task_item("app.tasks.t", [0]), "run_after": "2030-02-30T00:00:00Z"},
             queries.task_item("app.tasks.t", [1], priority=101)]
    with pytest.raises(InvalidArgument, match="^task 2: priority"):
        queries.enqueue_many(cur, items)
    items[1] = {**queries.task_item("app.tasks.t", [1]), "run_after": "garbage"}
    with pytest.raises(InvalidArgument, match='^task 2: run_after must be an ISO 8601 timestamp'
                       ' with a time zone offset, got "garbage"$'):
        queries.enqueue_many(cur, items)
    assert count_rows(cur) == 0


@pytest.mark.parametrize("field", ["run_after", "expires_at"])
def test_a_malformed_timestamp_is_named_alone(cur, field):
    """Since 0006: the message named both fields and left a blank for a missing one."""
    items = [queries.task_item("app.tasks.t", [0]),
             {**queries.task_item("app.tasks.t", [1]), field: 5}]
    with pytest.raises(InvalidArgument,
                       match=f"^task 2: {field} must be an ISO 8601 timestamp with a time zone "
                             "offset, got 5$"):
        queries.enqueue_many(cur, items)
    assert count_rows(cur) == 0


def test_possible_edge_timestamps_are_accepted(cur):
    rows = queries.enqueue_many(cur, [
        queries.task_item("app.tasks.t", [1], run_after="2032-02-29T23:59:59.999999+15:59"),
        queries.task_item("app.tasks.t", [2], expires_at="9999-12-30T00:00:00-00:00"),
        {**queries.task_item("app.tasks.t", [3]), "run_after": None, "expires_at": None},
    ], now=datetime(2030, 1, 1, tzinfo=UTC))
    assert [r.created for r in rows] == [True, True, True]
    by_id = {r.result_id: r for r in queries.get_task_runs(cur, [r.result_id for r in rows])}
    runs = [by_id[r.result_id] for r in rows]
    assert runs[0].run_after == datetime(2032, 2, 29, 8, 0, 59, 999999, tzinfo=UTC)
    assert runs[1].expires_at == datetime(9999, 12, 30, tzinfo=UTC)  # the last day (0008)
    assert (runs[2].run_after, runs[2].expires_at) == (datetime(2030, 1, 1, tzinfo=UTC), None)
