-- reproq 0005: heartbeats renew only spent leases; batch calls refuse what they cannot store
-- as given; a task being cancelled stops deduplicating; release wakes runners.
--
-- * heartbeat: renews a lease only once at least a quarter of it is spent (at most 10 s of
--   it), instead of rewriting every RUNNING row of the worker on every call. leased_until is
--   indexed, so each renewal was a non-HOT update, and the runner heartbeats every second:
--   with hundreds of tasks claimed under a second ago that was hundreds of useless row
--   versions per second, and the UPDATE waited on rows the runner's other connection was
--   completing. Still returns every cancelled task of the worker, renewed or not; it finds
--   them through a new partial index of the running tasks whose cancellation was requested
--   (usually empty), where it read the row of every running task of every worker.
-- * enqueue_many: an impossible timestamp that has the right shape ("2030-02-30T00:00:00Z",
--   "24:01", an offset of +16:00) failed with PostgreSQL's 22008/22007/22009 instead of RQ003
--   naming the item. The 0003 body is kept, renamed reproq._enqueue_many_unchecked; the new
--   reproq.enqueue_many tries the batch's timestamps first (a read-only subtransaction) and
--   calls it. It is a new function object: privileges granted or revoked on
--   reproq.enqueue_many by hand stay with the renamed one and must be applied again.
-- * complete_many, set_logs_uris: an id given twice was joined twice by UPDATE ... FROM,
--   which kept either value. They now refuse the call (RQ003 naming the id). release stores
--   nothing per element, so a repeated id there releases the task once, as before.
-- * cancel: a RUNNING task whose cancellation is requested leaves deduplication (dedup =
--   false). It still held its task_runs_dedup_idx slot until its worker noticed (a heartbeat
--   later, or a lease later if the worker was gone), so an identical task enqueued meanwhile
--   (cancel, then enqueue afresh) mapped onto it and ended CANCELLED with it. Such a task never
--   becomes READY again (fail, release and reclaim turn it CANCELLED), so nothing else
--   deduplicates against it.
-- * release: notifies the queues of the tasks it makes READY again, as an enqueue does, so
--   that listening runners take them at once instead of at their next poll (a runner hands
--   tasks back when it stops, or when all its children are held by slow tasks).

-- Entries only for RUNNING rows with cancel_requested: claims and completions never add one,
-- and the rows they update are non-HOT already (status is indexed). Building it reads the
-- table once, holding off writes meanwhile (about half a second per million rows).
create index task_runs_cancel_requested_idx on reproq.task_runs (leased_by)
where status = 'RUNNING' and cancel_requested;

comment on index reproq.task_runs_cancel_requested_idx is
'Running tasks whose cancellation was requested, by worker: what each heartbeat returns.';

create or replace function reproq.heartbeat(
    p_worker_id text,
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_renew_before timestamptz;
begin
    if p_lease_seconds is null or p_lease_seconds not between 1 and 31536000 then
        raise exception 'p_lease_seconds must be from 1 to 31536000, got %', p_lease_seconds
            using errcode = 'RQ003';
    end if;
    -- A lease is renewed once a quarter of it is spent, at most 10 s of it (a 60 s lease after
    -- 10 s, a 4 s lease after 1 s): until then a renewal would only write a new row version.
    v_renew_before := v_now + make_interval(secs => p_lease_seconds)
        - make_interval(secs => least(p_lease_seconds / 4.0, 10));

    update reproq.workers as w set last_seen_at = v_now where w.worker_id = p_worker_id;

    -- The leases due for renewal: one range of task_runs_lease_expiry_idx (all workers').
    update reproq.task_runs as t
    set leased_until = v_now + make_interval(secs => p_lease_seconds)
    where
        t.status = 'RUNNING'
        and t.leased_by = p_worker_id
        and t.leased_until <= v_renew_before;

    return query
    select t.result_id
    from reproq.task_runs as t
    where t.status = 'RUNNING' and t.cancel_requested and t.leased_by = p_worker_id;
end;
$$;

comment on function reproq.heartbeat(text, integer, timestamptz) is
'Mark the worker seen and renew the leases of the tasks p_worker_id is running once a quarter '
'of a lease is spent (at most 10 s of it): fresher leases are left as they are. Returns the '
'ids of all its running tasks whose cancellation was requested.';


alter function reproq.enqueue_many(jsonb, boolean, timestamptz)
rename to _enqueue_many_unchecked;

comment on function reproq._enqueue_many_unchecked(jsonb, boolean, timestamptz) is
'Internal: reproq.enqueue_many''s work, for a batch whose timestamps PostgreSQL can read '
'(an impossible one raises 22007/22008/22009 here). Call reproq.enqueue_many instead.';

create function reproq.enqueue_many(
    p_tasks jsonb,
    p_dedup boolean default true,
    p_now timestamptz default null
) returns setof reproq.enqueued
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_readable boolean := true;
    v_sqlstate text;
    v_message text;
    v_position bigint;
    v_field text;
    v_value jsonb;
begin
    -- The JSON shape rules of _enqueue_many_unchecked admit a timestamp such as
    -- "2030-02-30T00:00:00Z" that no timestamptz can hold. So when an item has a timestamp,
    -- read them all first, in a subtransaction that writes nothing: it takes no transaction id,
    -- so a transaction may enqueue any number of batches without overflowing the 64 cached
    -- subtransaction ids. Values of the wrong JSON type fail here too and are then reported by
    -- _enqueue_many_unchecked's own checks.
    if jsonb_typeof(p_tasks) = 'array'
        and p_tasks @? '$[*] ? (exists (@.run_after) || exists (@.expires_at))'
    then
        begin
            perform
                count((t.item ->> 'run_after')::timestamptz),
                count((t.item ->> 'expires_at')::timestamptz)
            from jsonb_array_elements(p_tasks) as t (item);
        exception
            -- Whatever failed (a bad timestamp, a time zone name of a value the shape rules
            -- refuse anyway) fails again below, where it is reported.
            when others then v_readable := false;
        end;
    end if;

    if v_readable then
        return query select * from reproq._enqueue_many_unchecked(p_tasks, p_dedup, p_now);
        return;
    end if;

    -- Some timestamp is unreadable. Every other problem of the batch comes first:
    -- _enqueue_many_unchecked reports it as usual, and reaches the timestamps only when there
    -- is none. Then name the first item whose timestamp cannot be read.
    begin
        return query select * from reproq._enqueue_many_unchecked(p_tasks, p_dedup, p_now);
        return;
    exception
        when invalid_datetime_format
            or datetime_field_overflow
            or invalid_time_zone_displacement_value
            then get stacked diagnostics v_sqlstate = returned_sqlstate, v_message = message_text;
    end;
    for v_position, v_field, v_value in
        select t.position, f.field, t.item -> f.field
        from jsonb_array_elements(p_tasks) with ordinality as t (item, position)
        cross join unnest(array['run_after', 'expires_at']) with ordinality as f (field, n)
        order by t.position, f.n
    loop
        begin
            perform (v_value #>> '{}')::timestamptz;
        exception
            when invalid_datetime_format
                or datetime_field_overflow
                or invalid_time_zone_displacement_value
                then raise exception 'task %: % must be a valid date and time, got % (%)',
                    v_position, v_field, v_value, regexp_replace(sqlerrm, ': ".*"$', '')
                    using errcode = 'RQ003';
        end;
    end loop;
    -- Not reached (the cast that failed for the batch fails for its item): PostgreSQL's error.
    raise exception using errcode = v_sqlstate, message = v_message;
end;
$$;

comment on function reproq.enqueue_many(jsonb, boolean, timestamptz) is
'Enqueue a JSON array of task objects, all or nothing. Returns one row per input (position, '
'result_id, created, enqueued_at). With dedup, a spec identical to a READY or RUNNING dedup '
'task maps to that task instead of inserting. One pg_notify per call.';


create function reproq._refuse_repeated_ids(p_result_ids bigint[]) returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_repeated bigint;
begin
    select u.result_id into v_repeated
    from unnest(p_result_ids) with ordinality as u (result_id, position)
    where u.result_id is not null
    group by u.result_id
    having count(*) > 1
    order by min(u.position)
    limit 1;
    if v_repeated is not null then
        raise exception 'p_result_ids must not repeat an id, got % more than once', v_repeated
            using errcode = 'RQ003';
    end if;
end;
$$;

comment on function reproq._refuse_repeated_ids(bigint[]) is
'Internal: raise RQ003 naming the first id that p_result_ids holds more than once.';


create or replace function reproq.complete_many(
    p_result_ids bigint[],
    p_lease_tokens uuid[],
    p_return_values jsonb[],
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- One primary-key lookup per id, in generic plans too (see below), so plan once per session.
-- The generic plan is kept until the statistics change; made while the table was small it would
-- be a sequential scan, so rule that out.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_done integer;
begin
    if cardinality(p_result_ids) is distinct from cardinality(p_lease_tokens)
        or cardinality(p_result_ids) is distinct from cardinality(p_return_values)
    then
        raise exception 'p_result_ids, p_lease_tokens and p_return_values must be equally long'
            using errcode = 'RQ003';
    end if;

    return query
    with done as (
        update reproq.task_runs as t
        set
            status = 'SUCCESSFUL',
            return_json = u.return_value,
            finished_at = v_now,
            leased_by = null,
            leased_until = null,
            lease_token = null
        from unnest(p_result_ids, p_lease_tokens, p_return_values)
            as u (result_id, lease_token, return_value)
        -- Only a RUNNING row holds a lease token (task_runs_lease_iff_running), so the token
        -- match is the status check. Spelling out status = 'RUNNING' as well would let the
        -- planner drive the join from task_runs_lease_expiry_idx, i.e. from every RUNNING row.
        where t.result_id = u.result_id and t.lease_token = u.lease_token
        returning t.result_id
    )

    select d.result_id from done as d;

    -- A row is updated once however many times its id is given, so when every id was accepted
    -- none was repeated: the usual call pays nothing for this check. Otherwise look for a
    -- repeated id (its row would have kept either return value) and refuse the whole call.
    get diagnostics v_done = row_count;
    if v_done < cardinality(p_result_ids) then
        perform reproq._refuse_repeated_ids(p_result_ids);
    end if;
end;
$$;


comment on function reproq.complete_many(bigint[], uuid[], jsonb[], timestamptz) is
'Mark many running tasks SUCCESSFUL with their return values; fenced by lease token. Returns '
'the ids accepted: an id missing from the result had lost its lease and was left untouched. '
'An id given twice refuses the whole call (RQ003).';

create or replace function reproq.set_logs_uris(
    p_result_ids bigint[],
    p_lease_tokens uuid[],
    p_logs_uris text[]
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- One primary-key lookup per id, in generic plans too (see below), so plan once per session.
-- The generic plan is kept until the statistics change; made while the table was small it would
-- be a sequential scan, so rule that out.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    v_recorded integer;
begin
    if cardinality(p_result_ids) is distinct from cardinality(p_lease_tokens)
        or cardinality(p_result_ids) is distinct from cardinality(p_logs_uris)
    then
        raise exception 'p_result_ids, p_lease_tokens and p_logs_uris must be equally long'
            using errcode = 'RQ003';
    end if;

    return query
    with recorded as (
        update reproq.task_runs as t
        set logs_uri = u.logs_uri
        from unnest(p_result_ids, p_lease_tokens, p_logs_uris)
            as u (result_id, lease_token, logs_uri)
        -- Only a RUNNING row holds a lease token (task_runs_lease_iff_running): the token
        -- match is the status check (see complete_many).
        where t.result_id = u.result_id and t.lease_token = u.lease_token
        returning t.result_id
    )

    select r.result_id from recorded as r;

    -- As in complete_many: only a call that left some id out can have repeated one.
    get diagnostics v_recorded = row_count;
    if v_recorded < cardinality(p_result_ids) then
        perform reproq._refuse_repeated_ids(p_result_ids);
    end if;
end;
$$;

comment on function reproq.set_logs_uris(bigint[], uuid[], text[]) is
'Record where each running attempt''s stdout/stderr log is kept, for many tasks at once; '
'fenced by lease token. Returns the ids accepted (the others had lost their lease). An id '
'given twice refuses the whole call (RQ003).';


create or replace function reproq.release(
    p_result_ids bigint[],
    p_lease_tokens uuid[],
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- A generic plan joins the id arrays to every RUNNING row (a nested loop); planned per call,
-- it is an index lookup per id.
set plan_cache_mode = force_custom_plan
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_released bigint[];
    v_queues text;
begin
    if cardinality(p_result_ids) is distinct from cardinality(p_lease_tokens) then
        raise exception 'p_result_ids and p_lease_tokens must be equally long'
            using errcode = 'RQ003';
    end if;

    with handed_back as (
        update reproq.task_runs as t
        set
            status = case when t.cancel_requested then 'CANCELLED' else 'READY' end,
            finished_at = case when t.cancel_requested then v_now end,
            attempts = t.attempts - 1,
            worker_ids = t.worker_ids[1:cardinality(t.worker_ids) - 1],
            -- Undo what claim set for a first attempt; run_after is kept, so the task keeps
            -- its place in the FIFO order.
            started_at = case when t.attempts > 1 then t.started_at end,
            last_attempted_at = case when t.attempts > 1 then t.last_attempted_at end,
            leased_by = null,
            leased_until = null,
            lease_token = null
        from unnest(p_result_ids, p_lease_tokens) as u (result_id, lease_token)
        where
            t.result_id = u.result_id
            and t.lease_token = u.lease_token
            and t.status = 'RUNNING'
        returning t.result_id, t.queue_name, t.status
    )

    select
        array_agg(h.result_id),
        string_agg(distinct h.queue_name, ',') filter (where h.status = 'READY')
    into v_released, v_queues
    from handed_back as h;

    -- One notification per call, as enqueue_many sends: listening runners wake up.
    if v_queues is not null then
        perform pg_notify('reproq', left(v_queues, 7000));
    end if;

    return query select r.result_id from unnest(v_released) as r (result_id);
end;
$$;

comment on function reproq.release(bigint[], uuid[], timestamptz) is
'Hand running tasks back to READY without spending an attempt (a stopping runner, or one '
'whose children are all held by slow tasks); a task whose cancellation was requested ends '
'CANCELLED instead. Fenced by lease token; returns the ids released and notifies their queues '
'on "reproq".';


create or replace function reproq.cancel(p_result_id bigint, p_now timestamptz default null)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_status text;
begin
    select t.status into v_status
    from reproq.task_runs as t
    where t.result_id = p_result_id
    for update;
    if not found then
        raise exception 'task % does not exist', p_result_id using errcode = 'RQ004';
    end if;

    if v_status in ('READY', 'WAITING') then
        update reproq.task_runs as t
        set status = 'CANCELLED', finished_at = v_now
        where t.result_id = p_result_id;
        return 'CANCELLED';
    elsif v_status = 'RUNNING' then
        -- Out of deduplication at once: an identical task enqueued from now on is a new one,
        -- not this one that is about to end CANCELLED.
        update reproq.task_runs as t
        set cancel_requested = true, dedup = false
        where t.result_id = p_result_id;
    end if;
    return v_status;
end;
$$;

-- Tasks whose cancellation was requested before this migration leave deduplication too.
update reproq.task_runs as t
set dedup = false
where t.status = 'RUNNING' and t.cancel_requested and t.dedup;

comment on function reproq.cancel(bigint, timestamptz) is
'Cancel a task: READY or WAITING become CANCELLED at once; a RUNNING one gets '
'cancel_requested (its worker sees it at the next heartbeat, stops it and records CANCELLED) '
'and stops deduplicating (an identical enqueue creates a new task); finished tasks are left as '
'they are. Returns the status after the call.';
