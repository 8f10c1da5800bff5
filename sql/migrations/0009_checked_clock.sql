-- reproq 0009: every function refuses a p_now whose times a client could not read back.
--
-- p_now is the clock each function uses when it is given (tests, replays); null means now().
-- 0008 refused a p_now outside 0001-01-02 to 9999-12-30 (UTC) in the enqueue functions only.
-- The others stored what they computed from any p_now: fail(..., p_now => '-infinity') made a
-- retry due at once with run_after -infinity, and the runner that claimed it could not decode
-- the row (the claim committed, the task stayed RUNNING); 'infinity' made a retry that is never
-- due, or (claim, heartbeat) a lease that never expires.
--
-- reproq._clock(p_now) is that clock, checked: RQ003 for a p_now outside 0001-01-02 to
-- 9998-12-30 (UTC). The upper end is a year below the enqueue functions' 9999-12-30, because
-- these functions add up to a year to it (the longest lease, p_lease_seconds <= 31536000, and
-- the longest retry delay, p_retry_in_seconds <= 31536000), and what they store must stay
-- readable. Each function below is restated from its latest migration with
-- coalesce(p_now, now()) replaced by reproq._clock(p_now), and nothing else changed;
-- CREATE OR REPLACE keeps their comments and privileges. complete, pause_queue and
-- resume_queue call complete_many and _set_queue_paused, so they are covered too.

create function reproq._clock(p_now timestamptz) returns timestamptz
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_now not between '0001-01-02 00:00:00+00' and '9998-12-30 23:59:59.999999+00' then
        raise exception 'p_now must be from 0001-01-02 to 9998-12-30 (UTC), got %', p_now
            using errcode = 'RQ003',
            hint = 'Times computed from it (leases, retries) must stay readable by clients.';
    end if;
    return coalesce(p_now, now());
end;
$$;

comment on function reproq._clock(timestamptz) is
'Internal: the clock of a function given p_now (null means now()); RQ003 for a p_now outside '
'0001-01-02 to 9998-12-30 UTC, whose derived times (up to a year later) clients could not read.';

-- reproq._set_queue_paused: restated from 0007_missing_arguments_refused.sql.

create or replace function reproq._set_queue_paused(
    p_queue_name text, p_paused boolean, p_now timestamptz
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_queue_name is null or p_queue_name = '' then
        raise exception 'p_queue_name must be a non-empty string' using errcode = 'RQ003';
    end if;
    insert into reproq.queue_controls as c (queue_name, paused, updated_at)
    values (p_queue_name, p_paused, reproq._clock(p_now))
    on conflict (queue_name) do update
        set paused = excluded.paused, updated_at = excluded.updated_at;
end;
$$;

-- reproq.cancel: restated from 0007_missing_arguments_refused.sql.

create or replace function reproq.cancel(p_result_id bigint, p_now timestamptz default null)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := reproq._clock(p_now);
    v_status text;
begin
    if p_result_id is null then
        raise exception 'p_result_id must not be null' using errcode = 'RQ003';
    end if;
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

-- reproq.claim: restated from 0003_cheaper_hot_paths.sql.

create or replace function reproq.claim(
    p_worker_id text,
    p_queues text[],
    p_limit integer default 1,
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof reproq.claimed_task
language plpgsql
set search_path = pg_catalog, pg_temp
-- Every statement below has a generic plan as good as its custom plan (the UPDATE finds its rows
-- by primary key, the scans are bounded by the claim index), so plan once per session: custom
-- plans cost more planning time than a claim of a few rows spends executing. A generic plan
-- estimates a third of the backlog due and 10% of it claimed, which at 1M rows is above
-- jit_above_cost: JIT would then compile the claim on every call (12 ms) to read a few pages.
-- A generic plan is made once, possibly while the table is still small and a sequential scan
-- looks cheapest, and kept until the statistics change: rule sequential scans out.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    v_now timestamptz := reproq._clock(p_now);
    v_queues text[];
    -- Above the highest allowed priority (100): the first probe finds the top level.
    v_priority smallint := 101::smallint;
    v_wanted integer := p_limit;
    v_claimed integer;
begin
    if p_worker_id is null or p_worker_id = '' then
        raise exception 'p_worker_id must be a non-empty string' using errcode = 'RQ003';
    end if;
    if p_queues is null or cardinality(p_queues) = 0 then
        raise exception 'p_queues must name at least one queue' using errcode = 'RQ003';
    end if;
    if p_limit is null or p_limit not between 1 and 10000 then
        raise exception 'p_limit must be from 1 to 10000, got %', p_limit using errcode = 'RQ003';
    end if;
    if p_lease_seconds is null or p_lease_seconds not between 1 and 31536000 then
        raise exception 'p_lease_seconds must be from 1 to 31536000, got %', p_lease_seconds
            using errcode = 'RQ003';
    end if;

    -- Reclaim only when there is an expired lease to take back: this probe reads the first
    -- entry of task_runs_lease_expiry_idx, the reclaim's statement costs more even when idle.
    if exists (
        select from reproq.task_runs as t
        where t.status = 'RUNNING' and t.leased_until < v_now
    ) then
        perform reproq.reclaim(v_now);
    end if;

    if cardinality(p_queues) = 1 and p_queues[1] is not null then
        -- The usual call names one queue: nothing to deduplicate, only its pause to check.
        if not exists (
            select from reproq.queue_controls as c
            where c.queue_name = p_queues[1] and c.paused
        ) then
            v_queues := p_queues;
        end if;
    else
        select array_agg(distinct q.queue_name) into v_queues
        from unnest(p_queues) as q (queue_name)
        where q.queue_name is not null and not exists (
            select from reproq.queue_controls as c
            where c.queue_name = q.queue_name and c.paused
        );
    end if;

    -- Walk the priority levels that hold READY rows, highest first, and take due rows level by
    -- level. One index range scan over (queue, priority, run_after <= now) stops at the first
    -- row not yet due, so rows scheduled for later (future run_after, retry backoff) are never
    -- read: a claim costs at most a probe per priority level, not a scan of the backlog.
    while v_wanted > 0 and v_queues is not null loop
        select max(l.priority) into v_priority
        from unnest(v_queues) as q (queue_name)
        cross join lateral (
            select t.priority
            from reproq.task_runs as t
            where
                t.status = 'READY'
                and t.queue_name = q.queue_name
                and t.priority < v_priority
            order by t.priority desc
            limit 1
        ) as l;
        exit when v_priority is null;

        return query
        with candidate as materialized (
            -- Per queue, the first v_wanted unlocked due rows of this level in FIFO order; the
            -- merge keeps FIFO across queues. SKIP LOCKED: no row goes to two claimers.
            select r.result_id
            from unnest(v_queues) as q (queue_name)
            cross join lateral (
                select t.result_id, t.run_after
                from reproq.task_runs as t
                where
                    t.status = 'READY'
                    and t.queue_name = q.queue_name
                    and t.priority = v_priority
                    and t.run_after <= v_now
                order by t.run_after asc, t.result_id asc
                limit v_wanted
                for update skip locked
            ) as r
            order by r.run_after asc, r.result_id asc
            limit v_wanted
        ),

        claimed as (
            update reproq.task_runs as t
            set
                status = 'RUNNING',
                attempts = t.attempts + 1,
                worker_ids = array_append(t.worker_ids, p_worker_id),
                leased_by = p_worker_id,
                leased_until = v_now + make_interval(secs => p_lease_seconds),
                lease_token = gen_random_uuid(),
                started_at = coalesce(t.started_at, v_now),
                last_attempted_at = v_now
            -- By primary key: a join to the CTE would let a generic plan (estimated 1000
            -- candidates) scan the whole table instead.
            where t.result_id = any(array(select c.result_id from candidate as c))
            returning
                t.result_id, t.task_path, t.spec_json, t.queue_name, t.priority, t.attempts,
                t.max_attempts, t.timeout_seconds, t.lease_token, t.leased_until,
                t.metadata_json, t.enqueued_at, t.started_at, t.run_after,
                t.last_attempted_at, t.worker_ids, t.errors_json
        )

        select
            c.result_id, c.task_path, c.spec_json, c.queue_name, c.priority, c.attempts,
            c.max_attempts, c.timeout_seconds, c.lease_token, c.leased_until,
            c.metadata_json, c.enqueued_at, c.started_at, c.run_after,
            c.last_attempted_at, c.worker_ids, c.errors_json
        from claimed as c
        order by c.run_after asc, c.result_id asc;

        get diagnostics v_claimed = row_count;
        v_wanted := v_wanted - v_claimed;
    end loop;
end;
$$;

-- reproq.complete_many: restated from 0005_fewer_writes_stricter_batches.sql.

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
    v_now timestamptz := reproq._clock(p_now);
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

-- reproq.fail: restated from 0007_missing_arguments_refused.sql.

create or replace function reproq.fail(
    p_result_id bigint,
    p_lease_token uuid,
    p_error jsonb,
    p_retry boolean default true,
    p_retry_in_seconds double precision default null,
    p_now timestamptz default null
) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := reproq._clock(p_now);
    v_task reproq.task_runs;
    v_status text;
begin
    if jsonb_typeof(p_error) is distinct from 'object' then
        raise exception 'p_error must be a JSON object such as '
            '{"exception_class_path": "...", "traceback": "..."}'
            using errcode = 'RQ003';
    end if;
    if p_retry is null then
        raise exception 'p_retry must be true or false' using errcode = 'RQ003';
    end if;
    -- "not between" is also true for NaN and infinity, which make_interval cannot take.
    if p_retry_in_seconds not between 0 and 31536000 then
        raise exception 'p_retry_in_seconds must be from 0 to 31536000, got %', p_retry_in_seconds
            using errcode = 'RQ003';
    end if;

    select t.* into v_task
    from reproq.task_runs as t
    where t.result_id = p_result_id and t.lease_token = p_lease_token and t.status = 'RUNNING'
    for update;
    if not found then
        perform reproq._raise_lease_lost(p_result_id, p_lease_token);
    end if;

    v_status := case
        when v_task.cancel_requested then 'CANCELLED'
        when p_retry and v_task.attempts < v_task.max_attempts then 'READY'
        else 'FAILED'
    end;

    update reproq.task_runs as t
    set
        status = v_status,
        errors_json = t.errors_json || jsonb_build_array(
            p_error || jsonb_build_object(
                'attempt', t.attempts, 'worker_id', t.leased_by, 'failed_at', v_now
            )
        ),
        run_after = case
            when v_status = 'READY' then v_now + make_interval(
                secs => coalesce(p_retry_in_seconds, reproq.backoff_seconds(t.attempts))
            )
            else t.run_after
        end,
        finished_at = case when v_status <> 'READY' then v_now end,
        leased_by = null,
        leased_until = null,
        lease_token = null
    where t.result_id = p_result_id;

    return v_status;
end;
$$;

-- reproq.heartbeat: restated from 0005_fewer_writes_stricter_batches.sql.

create or replace function reproq.heartbeat(
    p_worker_id text,
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := reproq._clock(p_now);
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

-- reproq.heartbeat (with the held ids): restated from 0008_readable_times_lock_free_heartbeat.sql.

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
    v_now timestamptz := reproq._clock(p_now);
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

-- reproq.reclaim: restated from 0002_queue_functions.sql.

create or replace function reproq.reclaim(p_now timestamptz default null) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := reproq._clock(p_now);
    v_count integer;
begin
    with expired as materialized (
        select t.result_id
        from reproq.task_runs as t
        where t.status = 'RUNNING' and t.leased_until < v_now
        for update skip locked
    )

    update reproq.task_runs as t
    set
        status = case
            when t.cancel_requested then 'CANCELLED'
            when t.attempts < t.max_attempts then 'READY'
            else 'FAILED'
        end,
        errors_json = t.errors_json || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempts,
            'worker_id', t.leased_by,
            'exception_class_path', 'reproq.LeaseExpired',
            'message', format(
                'worker %s stopped renewing its lease (expired at %s)', t.leased_by, t.leased_until
            ),
            'traceback', '',
            'failed_at', v_now
        )),
        run_after = v_now,
        finished_at = case
            when t.cancel_requested or t.attempts >= t.max_attempts then v_now
        end,
        leased_by = null,
        leased_until = null,
        lease_token = null
    from expired as e
    where t.result_id = e.result_id;
    get diagnostics v_count = row_count;
    return v_count;
end;
$$;

-- reproq.register_worker: restated from 0007_missing_arguments_refused.sql.

create or replace function reproq.register_worker(
    p_worker_id text,
    p_hostname text,
    p_pid integer,
    p_queues text[],
    p_concurrency integer,
    p_version text,
    p_now timestamptz default null
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_worker_id is null or p_worker_id = '' then
        raise exception 'p_worker_id must be a non-empty string' using errcode = 'RQ003';
    end if;
    if p_hostname is null then
        raise exception 'p_hostname must not be null' using errcode = 'RQ003';
    end if;
    if p_pid is null or p_pid <= 0 then
        raise exception 'p_pid must be a positive integer, got %', p_pid using errcode = 'RQ003';
    end if;
    if p_queues is null or cardinality(p_queues) = 0 or array_ndims(p_queues) <> 1
        or exists (select from unnest(p_queues) as q (name) where q.name is null)
    then
        raise exception 'p_queues must be a one-dimensional array naming at least one queue, '
            'without nulls' using errcode = 'RQ003';
    end if;
    if p_concurrency is null or p_concurrency <= 0 then
        raise exception 'p_concurrency must be a positive integer, got %', p_concurrency
            using errcode = 'RQ003';
    end if;
    if p_version is null then
        raise exception 'p_version must not be null' using errcode = 'RQ003';
    end if;

    insert into reproq.workers as w (
        worker_id, hostname, pid, queues, concurrency, version, started_at, last_seen_at
    )
    values (
        p_worker_id, p_hostname, p_pid, p_queues, p_concurrency, p_version,
        reproq._clock(p_now), reproq._clock(p_now)
    )
    on conflict (worker_id) do update
        set
            hostname = excluded.hostname,
            pid = excluded.pid,
            queues = excluded.queues,
            concurrency = excluded.concurrency,
            version = excluded.version,
            started_at = excluded.started_at,
            last_seen_at = excluded.last_seen_at;
end;
$$;

-- reproq.release: restated from 0006_held_leases_lockless_dedup.sql.

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
    v_now timestamptz := reproq._clock(p_now);
    v_released bigint[];
    v_queues text[];
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
        array_agg(distinct h.queue_name) filter (where h.status = 'READY')
    into v_released, v_queues
    from handed_back as h;

    -- One notification per call, as enqueue_many sends: listening runners wake up.
    perform reproq._notify_queues(v_queues);

    return query select r.result_id from unnest(v_released) as r (result_id);
end;
$$;
