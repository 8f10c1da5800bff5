-- reproq 0002: the queue's functions. Every state transition of a task happens in here.
--
-- Errors raised on bad input use reserved SQLSTATEs (class RQ), mapped to Python exceptions
-- in reproq_runner/errors.py and listed in docs/sql-api.md:
--   RQ001 invalid task path    RQ002 invalid spec       RQ003 invalid argument
--   RQ004 task not found       RQ005 lease lost         RQ006 invalid state

-- The canonical form of "the same work": jsonb's text form is deterministic (keys sorted,
-- whitespace normalised), so equal specs from Python and from psql hash alike.
-- PL/pgSQL, not a SQL function: with its pinned search_path a SQL function cannot be inlined,
-- and is then planned again for every call; PL/pgSQL evaluates this as a cached expression.
create function reproq.spec_hash(
    p_task_path text, p_queue_name text, p_spec jsonb
) returns bytea
language plpgsql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
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

comment on function reproq.spec_hash(text, text, jsonb) is
'sha256 of the canonical JSON {"args","kwargs","task_path","queue_name"} that defines '
'"the same work" for dedup.';


create function reproq.backoff_seconds(
    p_attempt integer,
    p_base_seconds double precision default 2,
    p_cap_seconds double precision default 3600
) returns double precision
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    -- Jitter spreads retries of tasks that failed together so they do not return together.
    -- The exponent is capped too, so huge attempt numbers cannot overflow double precision.
    return least(p_cap_seconds, p_base_seconds * power(2, least(greatest(p_attempt, 1) - 1, 60)))
        * (1 + 0.25 * random());
end;
$$;

comment on function reproq.backoff_seconds(integer, double precision, double precision) is
'Retry delay after the given attempt: d = least(cap, base * 2^(attempt-1)), times a random '
'factor from 1 to 1.25 (jitter), so the result lies in [d, 1.25 d].';


create function reproq._task_problem(
    p_task_path text,
    p_spec jsonb,
    p_queue_name text,
    p_priority numeric,
    p_max_attempts numeric,
    p_timeout_seconds numeric,
    p_lock_key text,
    p_concurrency_key text,
    p_concurrency_limit numeric,
    p_metadata jsonb
) returns text[]
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    -- The one home of the rules for a task's fields: enqueue and enqueue_many both call it.
    if p_task_path is null
        or p_task_path !~ '^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$'
    then
        return array['RQ001', format(
            'task_path must be a dotted import path such as "myapp.tasks.send_email", got %s',
            coalesce(to_jsonb(p_task_path), 'null'::jsonb)
        )];
    end if;
    if jsonb_typeof(p_spec) is distinct from 'object'
        or jsonb_typeof(p_spec -> 'args') is distinct from 'array'
        or jsonb_typeof(p_spec -> 'kwargs') is distinct from 'object'
        or p_spec - 'args' - 'kwargs' <> '{}'::jsonb
    then
        return array['RQ002', format(
            'spec must be exactly {"args": [...], "kwargs": {...}}, got %s',
            left(coalesce(p_spec, 'null'::jsonb)::text, 200)
        )];
    end if;
    if p_queue_name is null or p_queue_name = '' or length(p_queue_name) > 200 then
        return array['RQ003', 'queue_name must be a non-empty string of at most 200 characters'];
    end if;
    if p_priority is null or p_priority not between -100 and 100
        or p_priority <> trunc(p_priority)
    then
        return array['RQ003', format(
            'priority must be an integer from -100 to 100, got %s', coalesce(p_priority::text, 'null')
        )];
    end if;
    if p_max_attempts is null or p_max_attempts not between 1 and 1000
        or p_max_attempts <> trunc(p_max_attempts)
    then
        return array['RQ003', format(
            'max_attempts must be an integer from 1 to 1000, got %s',
            coalesce(p_max_attempts::text, 'null')
        )];
    end if;
    if p_timeout_seconds is null or p_timeout_seconds not between 1 and 31536000
        or p_timeout_seconds <> trunc(p_timeout_seconds)
    then
        return array['RQ003', format(
            'timeout_seconds must be a whole number of seconds from 1 to 31536000, got %s',
            coalesce(p_timeout_seconds::text, 'null')
        )];
    end if;
    if p_concurrency_limit is not null and (
        p_concurrency_limit not between 1 and 1000000
        or p_concurrency_limit <> trunc(p_concurrency_limit)
        or p_concurrency_key is null
    ) then
        return array['RQ003',
            'concurrency_limit must be a positive integer and needs a concurrency_key'];
    end if;
    if p_lock_key = '' then
        return array['RQ003', 'lock_key must be a non-empty string'];
    end if;
    if p_concurrency_key = '' then
        return array['RQ003', 'concurrency_key must be a non-empty string'];
    end if;
    if jsonb_typeof(p_metadata) is distinct from 'object' then
        return array['RQ003', 'metadata must be a JSON object'];
    end if;
    return null;
end;
$$;

comment on function reproq._task_problem(
    text, jsonb, text, numeric, numeric, numeric, text, text, numeric, jsonb
) is
'Internal: the first problem with one task''s fields as {sqlstate, message}, or null when '
'they are valid. The single home of these rules, shared by enqueue and enqueue_many.';


create function reproq.enqueue_one(
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
    v_hash := reproq.spec_hash(p_task_path, p_queue, p_spec);
    v_result.position := 1;

    -- One statement for both: a row with dedup = false is outside the partial unique index,
    -- so it can never conflict.
    insert into reproq.task_runs as t (
        queue_name, priority, run_after, task_path, spec_json, spec_hash, dedup,
        max_attempts, timeout_seconds, lock_key, concurrency_key, concurrency_limit,
        metadata_json, expires_at, enqueued_at
    )
    values (
        p_queue, p_priority, coalesce(p_run_after, v_now), p_task_path, p_spec, v_hash, p_dedup,
        p_max_attempts, p_timeout_seconds, p_lock_key, p_concurrency_key,
        p_concurrency_limit, coalesce(p_metadata, '{}'), p_expires_at, v_now
    )
    on conflict (spec_hash) where dedup and status in ('READY', 'RUNNING')
    do update set dedup = t.dedup
    -- xmax is 0 on a freshly inserted row and the locker's xid on a dedup hit.
    returning t.result_id, t.xmax = '0'::xid, t.enqueued_at
    into v_result.result_id, v_result.created, v_result.enqueued_at;

    if v_result.created then
        perform pg_notify('reproq', p_queue);
    end if;
    return v_result;
end;
$$;

comment on function reproq.enqueue_one(
    text, jsonb, text, integer, timestamptz, integer, integer, text, text, integer,
    timestamptz, jsonb, boolean, timestamptz
) is
'Enqueue one task in a single-row statement and return its reproq.enqueued row (position 1, '
'result_id, created, enqueued_at), so a caller knows a new row without reading it back. '
'reproq.enqueue and the one-task case of enqueue_many are this. Notifies when it inserted.';


create function reproq.enqueue_many(
    p_tasks jsonb,
    p_dedup boolean default true,
    p_now timestamptz default null
) returns setof reproq.enqueued
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
    v_problem text[];
    v_position bigint;
    v_results reproq.enqueued [];
    v_item jsonb;
    v_queues text;
begin
    if jsonb_typeof(p_tasks) is distinct from 'array' then
        raise exception 'p_tasks must be a JSON array of task objects'
            using errcode = 'RQ002';
    end if;
    if p_dedup is null then
        raise exception 'p_dedup must be true or false' using errcode = 'RQ003';
    end if;

    -- Validate everything first: a batch is all or nothing.
    -- First the JSON shape (known fields, JSON types, timestamps with an offset), so the typed
    -- casts below cannot fail; then the value rules of reproq._task_problem. Written inline: a
    -- function call per item would cost more than the checks themselves.
    select s.position, s.problem
    into v_position, v_problem
    from (
        select t.position, case
            when jsonb_typeof(t.item) is distinct from 'object'
                then array['RQ002', 'each task must be a JSON object']
            when
                t.item - array[
                    'task_path', 'spec', 'queue_name', 'priority', 'run_after', 'max_attempts',
                    'timeout_seconds', 'lock_key', 'concurrency_key', 'concurrency_limit',
                    'expires_at', 'metadata', 'dedup'
                ] <> '{}'::jsonb
                then array['RQ003', format(
                    'unknown task field(s) %s',
                    (
                        select string_agg(quote_literal(k), ', ')
                        from jsonb_object_keys(
                            t.item - array[
                                'task_path', 'spec', 'queue_name', 'priority', 'run_after',
                                'max_attempts', 'timeout_seconds', 'lock_key', 'concurrency_key',
                                'concurrency_limit', 'expires_at', 'metadata', 'dedup'
                            ]
                        ) as k
                    )
                )]
            when coalesce(jsonb_typeof(t.item -> 'task_path'), 'null') not in ('string', 'null')
                then array['RQ001', format(
                    'task_path must be a dotted import path such as "myapp.tasks.send_email", got %s',
                    t.item -> 'task_path'
                )]
            when
                coalesce(jsonb_typeof(t.item -> 'queue_name'), 'null') not in ('string', 'null')
                or coalesce(jsonb_typeof(t.item -> 'lock_key'), 'null') not in ('string', 'null')
                or coalesce(jsonb_typeof(t.item -> 'concurrency_key'), 'null') not in ('string', 'null')
                then array['RQ003', 'queue_name, lock_key and concurrency_key must be strings']
            when
                coalesce(jsonb_typeof(t.item -> 'priority'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'max_attempts'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'timeout_seconds'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'concurrency_limit'), 'null') not in ('number', 'null')
                then array[
                    'RQ003',
                    'priority, max_attempts, timeout_seconds and concurrency_limit must be numbers'
                ]
            -- ISO 8601 with an explicit offset: a timestamp without one would silently take the
            -- session's time zone.
            when
                t.item ->> 'run_after'
                !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                or t.item ->> 'expires_at'
                !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                then array['RQ003', format(
                    'run_after and expires_at must be ISO 8601 timestamps with a time zone offset, '
                    'got %s and %s', t.item -> 'run_after', t.item -> 'expires_at'
                )]
            when coalesce(jsonb_typeof(t.item -> 'dedup'), 'null') not in ('boolean', 'null')
                then array['RQ003', 'dedup must be true or false']
            when coalesce(jsonb_typeof(t.item -> 'metadata'), 'null') not in ('object', 'null')
                then array['RQ003', 'metadata must be a JSON object']
        end as problem
        from jsonb_array_elements(p_tasks) with ordinality as t (item, position)
    ) as s
    where s.problem is not null
    order by s.position
    limit 1;
    if v_problem is null then
        select t.position, p.problem
        into v_position, v_problem
        from jsonb_array_elements(p_tasks) with ordinality as t (item, position)
        cross join lateral (
            select reproq._task_problem(
                t.item ->> 'task_path',
                t.item -> 'spec',
                coalesce(t.item ->> 'queue_name', 'default'),
                coalesce((t.item ->> 'priority')::numeric, 0),
                coalesce((t.item ->> 'max_attempts')::numeric, 3),
                coalesce((t.item ->> 'timeout_seconds')::numeric, 900),
                t.item ->> 'lock_key',
                t.item ->> 'concurrency_key',
                (t.item ->> 'concurrency_limit')::numeric,
                coalesce(nullif(t.item -> 'metadata', 'null'), '{}')
            ) as problem
        ) as p
        where p.problem is not null
        order by t.position
        limit 1;
    end if;
    if v_problem is not null then
        raise exception 'task %: %', v_position, v_problem[2]
            using errcode = v_problem[1];
    end if;

    if jsonb_array_length(p_tasks) = 1 then
        v_item := p_tasks -> 0;
        return next reproq.enqueue_one(
            v_item ->> 'task_path',
            v_item -> 'spec',
            coalesce(v_item ->> 'queue_name', 'default'),
            coalesce((v_item ->> 'priority')::numeric::integer, 0),
            (v_item ->> 'run_after')::timestamptz,
            coalesce((v_item ->> 'max_attempts')::numeric::integer, 3),
            coalesce((v_item ->> 'timeout_seconds')::numeric::integer, 900),
            v_item ->> 'lock_key',
            v_item ->> 'concurrency_key',
            (v_item ->> 'concurrency_limit')::numeric::integer,
            (v_item ->> 'expires_at')::timestamptz,
            coalesce(nullif(v_item -> 'metadata', 'null'), '{}'),
            coalesce((v_item ->> 'dedup')::boolean, p_dedup),
            v_now
        );
        return;
    end if;

    with items as materialized (
        select
            t.position::integer as position,
            t.item ->> 'task_path' as task_path,
            t.item -> 'spec' as spec,
            coalesce(t.item ->> 'queue_name', 'default') as queue_name,
            coalesce((t.item ->> 'priority')::numeric::smallint, 0) as priority,
            coalesce((t.item ->> 'run_after')::timestamptz, v_now) as run_after,
            coalesce((t.item ->> 'max_attempts')::numeric::integer, 3) as max_attempts,
            coalesce((t.item ->> 'timeout_seconds')::numeric::integer, 900) as timeout_seconds,
            t.item ->> 'lock_key' as lock_key,
            t.item ->> 'concurrency_key' as concurrency_key,
            (t.item ->> 'concurrency_limit')::numeric::integer as concurrency_limit,
            (t.item ->> 'expires_at')::timestamptz as expires_at,
            coalesce(nullif(t.item -> 'metadata', 'null'), '{}') as metadata,
            coalesce((t.item ->> 'dedup')::boolean, p_dedup) as dedup,
            nextval('reproq.task_runs_result_id_seq'::regclass) as new_id
        from jsonb_array_elements(p_tasks) with ordinality as t (item, position)
    ),

    hashed as materialized (
        select
            i.*,
            reproq.spec_hash(i.task_path, i.queue_name, i.spec) as spec_hash
        from items as i
    ),

    -- Within one call, identical dedup specs collapse onto the first of them, because
    -- ON CONFLICT DO UPDATE may not touch the same row twice in one statement.
    led as (
        select
            h.*,
            case when h.dedup
                then first_value(h.new_id) over (
                    partition by h.dedup, h.spec_hash order by h.position
                )
                else h.new_id
            end as leader_id
        from hashed as h
    ),

    inserted as (
        insert into reproq.task_runs as t (
            result_id, queue_name, priority, run_after, task_path, spec_json, spec_hash,
            dedup, max_attempts, timeout_seconds, lock_key, concurrency_key,
            concurrency_limit, metadata_json, expires_at, enqueued_at
        )
        select
            l.new_id, l.queue_name, l.priority, l.run_after, l.task_path, l.spec,
            l.spec_hash, l.dedup, l.max_attempts, l.timeout_seconds, l.lock_key,
            l.concurrency_key, l.concurrency_limit, l.metadata, l.expires_at, v_now
        from led as l
        where l.new_id = l.leader_id
        -- Arbiter checks (and the row locks of dedup hits) happen in spec_hash order in every
        -- call, so two calls racing on overlapping specs wait for each other, never deadlock.
        order by l.spec_hash, l.position
        on conflict (spec_hash) where dedup and status in ('READY', 'RUNNING')
        -- A no-op update so RETURNING yields the existing row's id (DO NOTHING yields none).
        do update set dedup = t.dedup
        returning t.result_id, t.spec_hash, t.dedup, t.queue_name, t.enqueued_at
    ),

    -- Two equi-joins (hashable) rather than one join on an OR, which would be quadratic in
    -- the batch size: a dedup item maps to the one dedup row of its hash that the insert
    -- returned (new or existing), any other item to the row inserted with its own id.
    mapped as (
        select
            l.position,
            i.result_id,
            i.result_id = l.new_id as created,
            i.queue_name,
            i.enqueued_at
        from led as l
        inner join inserted as i on i.spec_hash = l.spec_hash and i.dedup
        where l.dedup
        union all
        select
            l.position,
            i.result_id,
            true as created,
            i.queue_name,
            i.enqueued_at
        from led as l
        inner join inserted as i on i.result_id = l.new_id
        where not l.dedup
    )

    select
        array_agg(
            row(m.position, m.result_id, m.created, m.enqueued_at)::reproq.enqueued
            order by m.position
        ),
        string_agg(distinct m.queue_name, ',') filter (where m.created)
    into v_results, v_queues
    from mapped as m;

    -- One notification per call, never per row: runners listening on "reproq" wake up.
    if v_queues is not null then
        perform pg_notify('reproq', left(v_queues, 7000));
    end if;

    return query select * from unnest(v_results);
end;
$$;

comment on function reproq.enqueue_many(jsonb, boolean, timestamptz) is
'Enqueue a JSON array of task objects, all or nothing. Returns one row per input (position, '
'result_id, created, enqueued_at). With dedup, a spec identical to a READY or RUNNING dedup '
'task maps to that task instead of inserting. One pg_notify per call.';


create function reproq.enqueue(
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
) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    return (reproq.enqueue_one(
        p_task_path, p_spec, p_queue, p_priority, p_run_after, p_max_attempts,
        p_timeout_seconds, p_lock_key, p_concurrency_key, p_concurrency_limit, p_expires_at,
        p_metadata, p_dedup, p_now
    )).result_id;
end;
$$;

comment on function reproq.enqueue(
    text, jsonb, text, integer, timestamptz, integer, integer, text, text, integer,
    timestamptz, jsonb, boolean, timestamptz
) is
'Enqueue one task and return its result_id (an existing one when deduplicated), i.e. '
'reproq.enqueue_one''s result_id. Example: select reproq.enqueue(''myapp.tasks.send_email'', '
'''{"args":[1],"kwargs":{}}''::jsonb, p_queue => ''emails'');';


create function reproq.reclaim(p_now timestamptz default null) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
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

comment on function reproq.reclaim(timestamptz) is
'Return RUNNING tasks whose lease expired to READY (attempts left), FAILED (none left) or '
'CANCELLED (cancel requested), recording the lost attempt. Called lazily by claim; returns '
'how many were reclaimed.';


create function reproq.claim(
    p_worker_id text,
    p_queues text[],
    p_limit integer default 1,
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof reproq.claimed_task
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
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

    perform reproq.reclaim(v_now);

    select array_agg(distinct q.queue_name) into v_queues
    from unnest(p_queues) as q (queue_name)
    where q.queue_name is not null and not exists (
        select from reproq.queue_controls as c
        where c.queue_name = q.queue_name and c.paused
    );

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
            from candidate as c
            where t.result_id = c.result_id
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

comment on function reproq.claim(text, text[], integer, integer, timestamptz) is
'Lease up to p_limit due READY tasks from the given (unpaused) queues to p_worker_id, highest '
'priority first then FIFO, with FOR UPDATE SKIP LOCKED: no task is handed to two claimers. '
'Each claimed task gets a fresh lease_token that fences its completion.';


create function reproq._raise_lease_lost(p_result_id bigint) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
begin
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

comment on function reproq._raise_lease_lost(bigint) is
'Internal: raise RQ004 (no such task) or RQ005 (lease lost) for a fenced call that matched '
'no running row.';


create function reproq.complete_many(
    p_result_ids bigint[],
    p_lease_tokens uuid[],
    p_return_values jsonb[],
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
begin
    if cardinality(p_result_ids) is distinct from cardinality(p_lease_tokens)
        or cardinality(p_result_ids) is distinct from cardinality(p_return_values)
    then
        raise exception 'p_result_ids, p_lease_tokens and p_return_values must be equally long'
            using errcode = 'RQ003';
    end if;

    return query
    with outcome as (
        select u.result_id, u.lease_token, u.return_value
        from unnest(p_result_ids, p_lease_tokens, p_return_values)
            as u (result_id, lease_token, return_value)
    ),

    done as (
        update reproq.task_runs as t
        set
            status = 'SUCCESSFUL',
            return_json = o.return_value,
            finished_at = v_now,
            leased_by = null,
            leased_until = null,
            lease_token = null
        from outcome as o
        where
            t.result_id = o.result_id
            and t.lease_token = o.lease_token
            and t.status = 'RUNNING'
        returning t.result_id
    )

    select d.result_id from done as d;
end;
$$;

comment on function reproq.complete_many(bigint[], uuid[], jsonb[], timestamptz) is
'Mark many running tasks SUCCESSFUL with their return values; fenced by lease token. Returns '
'the ids accepted: an id missing from the result had lost its lease and was left untouched.';


create function reproq.complete(
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
        perform reproq._raise_lease_lost(p_result_id);
    end if;
end;
$$;

comment on function reproq.complete(bigint, uuid, jsonb, timestamptz) is
'Mark one running task SUCCESSFUL. Raises RQ005 when the lease token no longer matches '
'(the task was reclaimed), RQ004 when the task does not exist.';


create function reproq.fail(
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
        perform reproq._raise_lease_lost(p_result_id);
    end if;

    v_status := case
        when v_task.cancel_requested then 'CANCELLED'
        when coalesce(p_retry, true) and v_task.attempts < v_task.max_attempts then 'READY'
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
'Returns the new status.';


create function reproq.release(
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
begin
    if cardinality(p_result_ids) is distinct from cardinality(p_lease_tokens) then
        raise exception 'p_result_ids and p_lease_tokens must be equally long'
            using errcode = 'RQ003';
    end if;

    return query
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
        returning t.result_id
    )

    select h.result_id from handed_back as h;
end;
$$;

comment on function reproq.release(bigint[], uuid[], timestamptz) is
'Hand running tasks back to READY without spending an attempt (graceful shutdown). Fenced by '
'lease token; returns the ids released.';


create function reproq.cancel(p_result_id bigint, p_now timestamptz default null) returns text
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
        update reproq.task_runs as t
        set cancel_requested = true
        where t.result_id = p_result_id;
    end if;
    return v_status;
end;
$$;

comment on function reproq.cancel(bigint, timestamptz) is
'Cancel a task: READY or WAITING become CANCELLED at once; a RUNNING one gets '
'cancel_requested (its worker sees it at the next heartbeat, stops it and records CANCELLED); '
'finished tasks are left as they are. Returns the status after the call.';


create function reproq.heartbeat(
    p_worker_id text,
    p_lease_seconds integer default 60,
    p_now timestamptz default null
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := coalesce(p_now, now());
begin
    if p_lease_seconds is null or p_lease_seconds not between 1 and 31536000 then
        raise exception 'p_lease_seconds must be from 1 to 31536000, got %', p_lease_seconds
            using errcode = 'RQ003';
    end if;

    update reproq.workers as w set last_seen_at = v_now where w.worker_id = p_worker_id;

    return query
    with renewed as (
        update reproq.task_runs as t
        set leased_until = v_now + make_interval(secs => p_lease_seconds)
        where t.status = 'RUNNING' and t.leased_by = p_worker_id
        returning t.result_id, t.cancel_requested
    )

    select r.result_id from renewed as r where r.cancel_requested;
end;
$$;

comment on function reproq.heartbeat(text, integer, timestamptz) is
'Extend the leases of all tasks p_worker_id is running and mark the worker seen. Returns the '
'ids of its tasks whose cancellation was requested.';


create function reproq.save_metadata(
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
        perform reproq._raise_lease_lost(p_result_id);
    end if;
end;
$$;

comment on function reproq.save_metadata(bigint, uuid, jsonb) is
'Replace a running task''s metadata_json (context.save_metadata()); fenced by lease token.';


create function reproq.set_logs_uris(
    p_result_ids bigint[],
    p_lease_tokens uuid[],
    p_logs_uris text[]
) returns setof bigint
language plpgsql
set search_path = pg_catalog, pg_temp
-- A generic plan joins the id arrays to every RUNNING row (a nested loop); planned per call,
-- it is an index lookup per id.
set plan_cache_mode = force_custom_plan
as $$
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
        where
            t.result_id = u.result_id
            and t.lease_token = u.lease_token
            and t.status = 'RUNNING'
        returning t.result_id
    )

    select r.result_id from recorded as r;
end;
$$;

comment on function reproq.set_logs_uris(bigint[], uuid[], text[]) is
'Record where each running attempt''s stdout/stderr log is kept, for many tasks at once; '
'fenced by lease token. Returns the ids accepted (the others had lost their lease).';


create function reproq.set_logs_uri(
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
        perform reproq._raise_lease_lost(p_result_id);
    end if;
end;
$$;

comment on function reproq.set_logs_uri(bigint, uuid, text) is
'Record where the running attempt''s stdout/stderr log is kept. Raises RQ005 when the lease '
'token no longer matches, RQ004 when the task does not exist.';


create function reproq.register_worker(
    p_worker_id text,
    p_hostname text,
    p_pid integer,
    p_queues text[],
    p_concurrency integer,
    p_version text,
    p_now timestamptz default null
) returns void
language sql
set search_path = pg_catalog, pg_temp
begin atomic
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

comment on function reproq.register_worker(text, text, integer, text[], integer, text, timestamptz)
is 'Record (or refresh) a runner process in reproq.workers when it starts.';


create function reproq.unregister_worker(p_worker_id text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from reproq.workers as w where w.worker_id = p_worker_id;
end;
$$;

comment on function reproq.unregister_worker(text) is
'Remove a runner from reproq.workers when it stops cleanly.';


create function reproq.pause_queue(p_queue_name text, p_now timestamptz default null)
returns void
language sql
set search_path = pg_catalog, pg_temp
begin atomic
    insert into reproq.queue_controls as c (queue_name, paused, updated_at)
    values (p_queue_name, true, coalesce(p_now, now()))
    on conflict (queue_name) do update set paused = true, updated_at = excluded.updated_at;
end;

comment on function reproq.pause_queue(text, timestamptz) is
'Stop claims from a queue; running tasks finish, enqueues still land.';


create function reproq.resume_queue(p_queue_name text, p_now timestamptz default null)
returns void
language sql
set search_path = pg_catalog, pg_temp
begin atomic
    insert into reproq.queue_controls as c (queue_name, paused, updated_at)
    values (p_queue_name, false, coalesce(p_now, now()))
    on conflict (queue_name) do update set paused = false, updated_at = excluded.updated_at;
end;

comment on function reproq.resume_queue(text, timestamptz) is
'Let claims take from a paused queue again.';
