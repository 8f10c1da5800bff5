-- reproq 0008: enqueue refuses a time that a client could not read back, and heartbeat does not
-- wait for a row another transaction holds locked.
--
-- PostgreSQL's timestamptz runs from 4713 BC to 294276 AD and has -infinity and infinity;
-- Python's datetime (and so psycopg, Django and the runner) covers only years 1 to 9999.
-- enqueue_one (and enqueue, which calls it) stored any p_run_after, p_expires_at and p_now, so
-- a psql user's run_after => '-infinity' made a task that was due at once and that no runner
-- could read: the claim committed, then decoding the row failed and the runner stopped, with
-- the task left RUNNING. enqueue_many refused infinity (its shape rules want digits) but let
-- an offset carry a time past 9999 in UTC ("9999-12-31T23:00:00-05:00").
--
-- Now both refuse, with RQ003, a run_after, expires_at or p_now outside 0001-01-02 to
-- 9999-12-30 in UTC: a day inside Python's range at either end, so that the time can be read
-- back in any time zone. enqueue_many checks this while it reads the items' timestamps and, as
-- for a timestamp it cannot read, reports every other problem of the batch first; then it
-- names the first item and field. Everything else in both bodies is restated unchanged from 0006
-- (enqueue_one) and 0005 (enqueue_many); CREATE OR REPLACE keeps their comments and
-- privileges. Other functions' p_now stays a clock for tests and is not checked.
--
-- heartbeat (the form with the held ids) waited for a lock on any held row: an uncommitted
-- reproq.cancel() of a running task in a web request's transaction stopped the runner's loop
-- (no timeouts enforced, no results read, no signals acted on, no other lease renewed, so
-- those ran out and other runners started their tasks as well) until that transaction ended.
-- Now it passes over a locked row (FOR UPDATE SKIP LOCKED) and renews it at a later call;
-- the body is otherwise restated unchanged from 0007.

create or replace function reproq.enqueue_one(
    p_task_path text,
    p_spec jsonb default '{"args": [], "kwargs": {}}',
    p_queue text default 'default',
    p_priority integer default 0,
    p_run_after timestamptz default null,
    p_max_attempts integer default 3,
    p_timeout_seconds integer default 900,
    p_lock_key text default null,
    p_concurrency_key text default null,
    p_concurrency_limit integer default null,
    p_expires_at timestamptz default null,
    p_metadata jsonb default '{}',
    p_dedup boolean default true,
    p_now timestamptz default null
) returns reproq.enqueued
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_problem text[];
    v_hash bytea;
    v_result reproq.enqueued;
begin
    -- One task in one single-row statement: the path of every one-task enqueue. (The set-based
    -- statement of enqueue_many pays off only for batches.)
    v_problem := reproq._task_problem(
        p_task_path, p_spec, p_queue, p_priority, p_max_attempts, p_timeout_seconds,
        p_lock_key, p_concurrency_key, p_concurrency_limit, coalesce(p_metadata, '{}')
    );
    if v_problem is not null then
        raise exception '%', v_problem[2] using errcode = v_problem[1];
    end if;
    if p_dedup is null then
        raise exception 'p_dedup must be true or false' using errcode = 'RQ003';
    end if;
    -- 0008: times every client can read back (see the header). A null is not between anything,
    -- so each check passes it.
    if p_run_after not between '0001-01-02 00:00:00+00' and '9999-12-30 23:59:59.999999+00' then
        raise exception 'run_after must be from 0001-01-02 to 9999-12-30 (UTC), got %',
            p_run_after using errcode = 'RQ003';
    end if;
    if p_expires_at not between '0001-01-02 00:00:00+00' and '9999-12-30 23:59:59.999999+00' then
        raise exception 'expires_at must be from 0001-01-02 to 9999-12-30 (UTC), got %',
            p_expires_at using errcode = 'RQ003';
    end if;
    if p_now not between '0001-01-02 00:00:00+00' and '9999-12-30 23:59:59.999999+00' then
        raise exception 'p_now must be from 0001-01-02 to 9999-12-30 (UTC), got %', p_now
            using errcode = 'RQ003';
    end if;
    -- reproq.spec_hash's expression, inline: the call (and its search_path switch) costs more
    -- than the hash.
    v_hash := sha256(convert_to(
        jsonb_build_object(
            'task_path', p_task_path,
            'queue_name', p_queue,
            'args', p_spec -> 'args',
            'kwargs', p_spec -> 'kwargs'
        )::text,
        'UTF8'
    ));
    v_result.position := 1;

    -- A row with dedup = false is outside the partial unique index, so it never conflicts. A
    -- dedup hit takes no row lock (0006: DO UPDATE held the existing task's row until this
    -- transaction ended, so a RUNNING task's worker could not heartbeat or complete it); its
    -- id is read by a statement of its own, whose snapshot sees the row the insert met. If
    -- that row finished in between, insert again (READ COMMITTED; under REPEATABLE READ the
    -- insert fails with a serialization error instead).
    loop
        insert into reproq.task_runs as t (
            queue_name, priority, run_after, task_path, spec_json, spec_hash, dedup,
            max_attempts, timeout_seconds, lock_key, concurrency_key, concurrency_limit,
            metadata_json, expires_at, enqueued_at
        )
        values (
            p_queue, p_priority, coalesce(p_run_after, v_now), p_task_path, p_spec, v_hash,
            p_dedup, p_max_attempts, p_timeout_seconds, p_lock_key, p_concurrency_key,
            p_concurrency_limit, coalesce(p_metadata, '{}'), p_expires_at, v_now
        )
        on conflict (spec_hash) where dedup and status in ('READY', 'RUNNING') do nothing
        returning t.result_id, t.enqueued_at
        into v_result.result_id, v_result.enqueued_at;
        if found then
            v_result.created := true;
            perform pg_notify('reproq', p_queue);
            exit;
        end if;

        select t.result_id, t.enqueued_at
        into v_result.result_id, v_result.enqueued_at
        from reproq.task_runs as t
        where t.spec_hash = v_hash and t.dedup and t.status in ('READY', 'RUNNING');
        v_result.created := false;
        exit when found;
    end loop;
    return v_result;
end;
$$;


create or replace function reproq.enqueue_many(
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
    if p_now not between '0001-01-02 00:00:00+00' and '9999-12-30 23:59:59.999999+00' then
        raise exception 'p_now must be from 0001-01-02 to 9999-12-30 (UTC), got %', p_now
            using errcode = 'RQ003';
    end if;
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
            -- 0008: the first time outside what every client can read back, if any.
            select t.position, f.field, t.item -> f.field
            into v_position, v_field, v_value
            from jsonb_array_elements(p_tasks) with ordinality as t (item, position)
            cross join unnest(array['run_after', 'expires_at']) with ordinality as f (field, n)
            where (t.item ->> f.field)::timestamptz
                not between '0001-01-02 00:00:00+00' and '9999-12-30 23:59:59.999999+00'
            order by t.position, f.n
            limit 1;
        exception
            -- Whatever failed (a bad timestamp, a time zone name of a value the shape rules
            -- refuse anyway) fails again below, where it is reported.
            when others then v_readable := false;
        end;
        if v_readable and v_position is not null then
            -- Every other problem of the batch comes first, as for a timestamp that cannot be
            -- read: _enqueue_many_unchecked reports it. When there is none, the rows it
            -- inserted are undone with this statement by the error that follows.
            perform count(*) from reproq._enqueue_many_unchecked(p_tasks, p_dedup, p_now);
            raise exception 'task %: % must be from 0001-01-02 to 9999-12-30 (UTC), got %',
                v_position, v_field, v_value using errcode = 'RQ003';
        end if;
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


create or replace function reproq.heartbeat(
    p_worker_id text,
    p_result_ids bigint[],
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- One primary-key lookup per held id, planned once per session, as complete_many.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_renew_before timestamptz;
begin
    if p_worker_id is null or p_worker_id = '' then
        raise exception 'p_worker_id must be a non-empty string' using errcode = 'RQ003';
    end if;
    if p_lease_seconds is null or p_lease_seconds not between 1 and 31536000 then
        raise exception 'p_lease_seconds must be from 1 to 31536000, got %', p_lease_seconds
            using errcode = 'RQ003';
    end if;
    if p_result_ids is null then
        raise exception 'p_result_ids must be an array of the ids the worker holds (empty when '
            'it holds none)' using errcode = 'RQ003';
    end if;
    -- Renewed once a quarter of the lease is spent, at most 10 s of it, as the 0005 form.
    v_renew_before := v_now + make_interval(secs => p_lease_seconds)
        - make_interval(secs => least(p_lease_seconds / 4.0, 10));

    update reproq.workers as w set last_seen_at = v_now where w.worker_id = p_worker_id;

    -- 0008: a row another transaction holds locked (a cancel() inside a web request's
    -- transaction, say) is passed over, not waited for: the runner calls this from the loop
    -- that supervises its children, which must not stop. It is renewed by a later heartbeat;
    -- renewal starts with three quarters of the lease left.
    update reproq.task_runs as t
    set leased_until = v_now + make_interval(secs => p_lease_seconds)
    -- By primary key, as claim does: a join to the locked rows would let a generic plan scan.
    where t.result_id = any(array(
        select l.result_id
        from reproq.task_runs as l
        -- Only a RUNNING row holds a lease (task_runs_lease_iff_running), so leased_by is the
        -- status check. Spelling out status = 'RUNNING' as well would let the planner read
        -- task_runs_lease_expiry_idx, i.e. the due leases of every worker, as complete_many
        -- notes for its own join.
        where
            l.result_id = any(p_result_ids)
            and l.leased_by = p_worker_id
            and l.leased_until <= v_renew_before
        for update skip locked
    ));

    return query
    select t.result_id
    from reproq.task_runs as t
    where t.status = 'RUNNING' and t.cancel_requested and t.leased_by = p_worker_id;
end;
$$;
