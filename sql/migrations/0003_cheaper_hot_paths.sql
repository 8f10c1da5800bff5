-- reproq 0003: cheaper hot paths. Same signatures, results, errors and comments as 0002; only
-- how the work is done changes (create or replace; 0002 is never edited).
--
-- * enqueue_one: spec_hash's expression inline instead of a call.
-- * enqueue_many: one pass of inline checks accepts a valid batch (the two diagnosing passes
--   run only when an item is invalid); spec_hash inline instead of a PL/pgSQL call per item;
--   DISTINCT ON instead of a window function to collapse identical dedup items.
-- * claim: reclaim only when an expired lease exists; a one-queue call skips the queue
--   statement; the claiming UPDATE finds its rows by primary key (= any(array(...))), which
--   makes the generic plan as good as a custom one, so the function is planned once per
--   session (force_generic_plan, with jit off) instead of on every call.
-- * complete_many, set_logs_uris: no `status = 'RUNNING'` filter next to the token match
--   (task_runs_lease_iff_running: only a RUNNING row holds a token), so the plan is one
--   primary-key lookup per id whatever the statistics say, generic plans included; planned
--   once per session instead of on every call (was force_custom_plan).

create or replace function reproq.enqueue_many(
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

    -- Validate everything first: a batch is all or nothing. One pass of inline checks decides
    -- whether every item is valid; only when one is not do the two passes below run to name
    -- the first invalid item and its problem. The checks are the JSON shape rules of those
    -- passes and the value rules of reproq._task_problem, written inline because a function
    -- call per item costs more than the checks themselves; tests/sql/test_enqueue_many_checks.py
    -- keeps them equivalent.
    if exists (
        select
        from jsonb_array_elements(p_tasks) as t (item)
        where case
            when jsonb_typeof(t.item) is distinct from 'object' then true
            -- No JSON value other than a string has a text form that matches this.
            when t.item ->> 'task_path' is null
                or t.item ->> 'task_path'
                !~ '^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$'
                then true
            when jsonb_typeof(t.item -> 'spec' -> 'args') is distinct from 'array'
                or jsonb_typeof(t.item -> 'spec' -> 'kwargs') is distinct from 'object'
                or (t.item -> 'spec') - 'args' - 'kwargs' <> '{}'::jsonb
                then true
            -- The usual item has no optional field: nothing more to check.
            when t.item - array['task_path', 'spec'] = '{}'::jsonb then false
            when
                t.item - array[
                    'task_path', 'spec', 'queue_name', 'priority', 'run_after', 'max_attempts',
                    'timeout_seconds', 'lock_key', 'concurrency_key', 'concurrency_limit',
                    'expires_at', 'metadata', 'dedup'
                ] <> '{}'::jsonb
                then true
            when
                coalesce(jsonb_typeof(t.item -> 'queue_name'), 'null') not in ('string', 'null')
                or coalesce(jsonb_typeof(t.item -> 'lock_key'), 'null') not in ('string', 'null')
                or coalesce(jsonb_typeof(t.item -> 'concurrency_key'), 'null') not in ('string', 'null')
                or coalesce(jsonb_typeof(t.item -> 'priority'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'max_attempts'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'timeout_seconds'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'concurrency_limit'), 'null') not in ('number', 'null')
                or coalesce(jsonb_typeof(t.item -> 'dedup'), 'null') not in ('boolean', 'null')
                or coalesce(jsonb_typeof(t.item -> 'metadata'), 'null') not in ('object', 'null')
                then true
            when
                t.item ->> 'run_after'
                !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                or t.item ->> 'expires_at'
                !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                then true
            -- The JSON types are right from here on, so these casts cannot fail.
            when length(coalesce(t.item ->> 'queue_name', 'default')) not between 1 and 200
                or t.item ->> 'lock_key' = ''
                or t.item ->> 'concurrency_key' = ''
                then true
            when coalesce((t.item ->> 'priority')::numeric, 0) not between -100 and 100
                or coalesce((t.item ->> 'priority')::numeric, 0)
                <> trunc(coalesce((t.item ->> 'priority')::numeric, 0))
                or coalesce((t.item ->> 'max_attempts')::numeric, 3) not between 1 and 1000
                or coalesce((t.item ->> 'max_attempts')::numeric, 3)
                <> trunc(coalesce((t.item ->> 'max_attempts')::numeric, 3))
                or coalesce((t.item ->> 'timeout_seconds')::numeric, 900) not between 1 and 31536000
                or coalesce((t.item ->> 'timeout_seconds')::numeric, 900)
                <> trunc(coalesce((t.item ->> 'timeout_seconds')::numeric, 900))
                then true
            when (t.item ->> 'concurrency_limit')::numeric not between 1 and 1000000
                or (t.item ->> 'concurrency_limit')::numeric
                <> trunc((t.item ->> 'concurrency_limit')::numeric)
                or (t.item ->> 'concurrency_limit' is not null and t.item ->> 'concurrency_key' is null)
                then true
            else false
        end
    ) then
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
            i.*,
            -- reproq.spec_hash's expression, inline: a call per item costs as much again.
            sha256(convert_to(
                jsonb_build_object(
                    'task_path', i.task_path,
                    'queue_name', i.queue_name,
                    'args', i.spec -> 'args',
                    'kwargs', i.spec -> 'kwargs'
                )::text,
                'UTF8'
            )) as spec_hash
        from (
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
        ) as i
    ),

    inserted as (
        insert into reproq.task_runs as t (
            result_id, queue_name, priority, run_after, task_path, spec_json, spec_hash,
            dedup, max_attempts, timeout_seconds, lock_key, concurrency_key,
            concurrency_limit, metadata_json, expires_at, enqueued_at
        )
        -- Within one call, identical dedup specs collapse onto the first of them (ON CONFLICT
        -- DO UPDATE may not touch the same row twice in one statement): one row per spec_hash
        -- among dedup items, every other item as it is. The same sort puts the rows in
        -- spec_hash order: arbiter checks (and the row locks of dedup hits) happen in that
        -- order in every call, so two calls racing on overlapping specs wait for each other,
        -- never deadlock.
        select distinct on (l.spec_hash, case when l.dedup then 0 else l.position end)
            l.new_id, l.queue_name, l.priority, l.run_after, l.task_path, l.spec,
            l.spec_hash, l.dedup, l.max_attempts, l.timeout_seconds, l.lock_key,
            l.concurrency_key, l.concurrency_limit, l.metadata, l.expires_at, v_now
        from items as l
        order by l.spec_hash, case when l.dedup then 0 else l.position end, l.position
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
        from items as l
        inner join inserted as i on i.spec_hash = l.spec_hash and i.dedup
        where l.dedup
        union all
        select
            l.position,
            i.result_id,
            true as created,
            i.queue_name,
            i.enqueued_at
        from items as l
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
end;
$$;


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
end;
$$;
