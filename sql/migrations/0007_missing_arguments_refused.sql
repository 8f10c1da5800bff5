-- reproq 0007: a missing (null) argument is refused with RQ003 and a message naming it.
--
-- Before, some functions took a null for a default or let it through to the table:
--   * fail(p_retry => null) retried, as if p_retry were true;
--   * heartbeat(null, ids) marked no worker seen and renewed nothing, without a word;
--   * complete, fail, save_metadata and set_logs_uri with a null id said "task <NULL> does not
--     exist" (RQ004), and with a null token "lease lost … (status now RUNNING)" (RQ005);
--     cancel(null) said the former;
--   * register_worker, pause_queue and resume_queue left the table to refuse a null (23502) or
--     an empty name, a bad pid or concurrency (23514), codes no Python exception maps;
--   * backoff_seconds with a null base or cap returned the cap or the uncapped delay, and a
--     null attempt counted as attempt 1; spec_hash hashed nulls.
-- Each of these now raises RQ003 (reproq_runner.errors.InvalidArgument) and writes nothing.
-- Two rules are new as well, both RQ003: register_worker refuses an empty p_queues, a null in
-- it or a multi-dimensional one (stored before); backoff_seconds refuses a base or cap outside
-- 0 to 31536000 (a negative base gave a negative delay). register_worker, pause_queue and
-- resume_queue become PL/pgSQL (they were SQL bodies) so that they can raise. Everything else
-- in the bodies is restated unchanged from 0002, 0005 (cancel) and 0006 (heartbeat); the table
-- constraints stay, for writes that do not go through the functions. Batch functions
-- (complete_many, set_logs_uris, release) are left as they are: a null array matches no row,
-- as an empty one does.

create function reproq._raise_lease_lost(p_result_id bigint, p_lease_token uuid) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
begin
    -- Only reached once a fenced call matched no running row: the usual call pays nothing for
    -- the null checks.
    if p_result_id is null then
        raise exception 'p_result_id must not be null' using errcode = 'RQ003';
    end if;
    if p_lease_token is null then
        raise exception 'p_lease_token must not be null (it is the lease_token claim returned)'
            using errcode = 'RQ003';
    end if;
    select t.status into v_status from reproq.task_runs as t where t.result_id = p_result_id;
    if not found then
        raise exception 'task % does not exist', p_result_id using errcode = 'RQ004';
    end if;
    raise exception 'lease lost on task %: it no longer runs under this lease (status now %)',
        p_result_id, v_status
        using errcode = 'RQ005',
        hint = 'The lease expired and the task was reclaimed; this attempt''s outcome is dropped.';
end;
$$;

comment on function reproq._raise_lease_lost(bigint, uuid) is
'Internal: for a fenced call that matched no running row, raise RQ003 (null id or token), '
'RQ004 (no such task) or RQ005 (lease lost).';


create or replace function reproq.complete(
    p_result_id bigint,
    p_lease_token uuid,
    p_return_value jsonb default 'null',
    p_now timestamptz default null
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform from reproq.complete_many(
        array[p_result_id], array[p_lease_token], array[p_return_value], p_now
    );
    if not found then
        perform reproq._raise_lease_lost(p_result_id, p_lease_token);
    end if;
end;
$$;


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
    v_now timestamptz := coalesce(p_now, now());
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

comment on function reproq.fail(bigint, uuid, jsonb, boolean, double precision, timestamptz) is
'Record a failed attempt (p_error is appended to errors_json). Retries after capped exponential '
'backoff with jitter (or p_retry_in_seconds) while attempts remain and p_retry is true; '
'otherwise FAILED (CANCELLED when cancellation was requested). Fenced by lease token. '
'Returns the new status. A null p_retry is refused (RQ003).';


create or replace function reproq.save_metadata(
    p_result_id bigint,
    p_lease_token uuid,
    p_metadata jsonb
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if jsonb_typeof(p_metadata) is distinct from 'object' then
        raise exception 'p_metadata must be a JSON object' using errcode = 'RQ003';
    end if;
    update reproq.task_runs as t
    set metadata_json = p_metadata
    where t.result_id = p_result_id and t.lease_token = p_lease_token and t.status = 'RUNNING';
    if not found then
        perform reproq._raise_lease_lost(p_result_id, p_lease_token);
    end if;
end;
$$;


create or replace function reproq.set_logs_uri(
    p_result_id bigint,
    p_lease_token uuid,
    p_logs_uri text
) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform from reproq.set_logs_uris(
        array[p_result_id], array[p_lease_token], array[p_logs_uri]
    );
    if not found then
        perform reproq._raise_lease_lost(p_result_id, p_lease_token);
    end if;
end;
$$;


-- Nothing calls the one-argument form any more.
drop function reproq._raise_lease_lost(bigint);


create or replace function reproq.cancel(p_result_id bigint, p_now timestamptz default null)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
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

    update reproq.task_runs as t
    set leased_until = v_now + make_interval(secs => p_lease_seconds)
    from unnest(p_result_ids) as h (result_id)
    -- Only a RUNNING row holds a lease (task_runs_lease_iff_running), so leased_by is the status
    -- check. Spelling out status = 'RUNNING' as well would let the planner drive the join from
    -- task_runs_lease_expiry_idx, i.e. from the due leases of every worker, as complete_many
    -- notes for its own join.
    where
        t.result_id = h.result_id
        and t.leased_by = p_worker_id
        and t.leased_until <= v_renew_before;

    return query
    select t.result_id
    from reproq.task_runs as t
    where t.status = 'RUNNING' and t.cancel_requested and t.leased_by = p_worker_id;
end;
$$;


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
        coalesce(p_now, now()), coalesce(p_now, now())
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


create function reproq._set_queue_paused(
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
    values (p_queue_name, p_paused, coalesce(p_now, now()))
    on conflict (queue_name) do update
        set paused = excluded.paused, updated_at = excluded.updated_at;
end;
$$;

comment on function reproq._set_queue_paused(text, boolean, timestamptz) is
'Internal: upsert a queue''s paused switch for pause_queue and resume_queue; RQ003 for a null '
'or empty queue name.';


create or replace function reproq.pause_queue(p_queue_name text, p_now timestamptz default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform reproq._set_queue_paused(p_queue_name, true, p_now);
end;
$$;


create or replace function reproq.resume_queue(p_queue_name text, p_now timestamptz default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform reproq._set_queue_paused(p_queue_name, false, p_now);
end;
$$;


create or replace function reproq.backoff_seconds(
    p_attempt integer,
    p_base_seconds double precision default 2,
    p_cap_seconds double precision default 3600
) returns double precision
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_attempt is null then
        raise exception 'p_attempt must not be null' using errcode = 'RQ003';
    end if;
    -- "not between" is also true for NaN and infinity.
    if p_base_seconds not between 0 and 31536000 or p_base_seconds is null then
        raise exception 'p_base_seconds must be from 0 to 31536000, got %', p_base_seconds
            using errcode = 'RQ003';
    end if;
    if p_cap_seconds not between 0 and 31536000 or p_cap_seconds is null then
        raise exception 'p_cap_seconds must be from 0 to 31536000, got %', p_cap_seconds
            using errcode = 'RQ003';
    end if;
    -- Jitter spreads retries of tasks that failed together so they do not return together.
    -- The exponent is capped too, so huge attempt numbers cannot overflow double precision.
    return least(p_cap_seconds, p_base_seconds * power(2, least(greatest(p_attempt, 1) - 1, 60)))
        * (1 + 0.25 * random());
end;
$$;

comment on function reproq.backoff_seconds(integer, double precision, double precision) is
'Retry delay after the given attempt: d = least(cap, base * 2^(attempt-1)), times a random '
'factor from 1 to 1.25 (jitter), so the result lies in [d, 1.25 d]. Base and cap are from 0 '
'to 31536000 seconds; an attempt below 1 counts as 1.';


create or replace function reproq.spec_hash(
    p_task_path text, p_queue_name text, p_spec jsonb
) returns bytea
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_task_path is null or p_queue_name is null or p_spec is null then
        raise exception 'p_task_path, p_queue_name and p_spec must not be null'
            using errcode = 'RQ003';
    end if;
    return sha256(convert_to(
        jsonb_build_object(
            'task_path', p_task_path,
            'queue_name', p_queue_name,
            'args', p_spec -> 'args',
            'kwargs', p_spec -> 'kwargs'
        )::text,
        'UTF8'
    ));
end;
$$;
