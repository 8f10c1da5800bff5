-- reproq 0006: a heartbeat renews only the leases its runner says it holds.
--
-- reproq.heartbeat(worker, lease_seconds) renews every spent lease leased to the worker. When
-- a claim committed but its reply never reached the runner (the connection dropped in
-- between), the runner never learned of those tasks, yet its heartbeats kept their leases
-- alive for as long as it ran: the tasks stayed RUNNING without running. The new form takes
-- the ids the runner holds (claimed and not yet handed to a child, running or queued in one,
-- finished and not yet stored, to be handed back) and renews only those; a lease it does not
-- hold runs out, and the next claim reclaims the task (reproq.LeaseExpired, an attempt spent).
-- It also reads rows by primary key: the old form read the due leases of every worker through
-- task_runs_lease_expiry_idx and kept this worker's.
--
-- The three-argument form stays, unchanged, for runners of earlier versions (a runner accepts
-- a schema newer than itself, so a rolling upgrade has both kinds at once).

create function reproq.heartbeat(
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

comment on function reproq.heartbeat(text, bigint[], integer, timestamptz) is
'Mark the worker seen and renew the leases of the listed tasks it holds (RUNNING, leased to '
'p_worker_id) once a quarter of a lease is spent (at most 10 s of it); a lease it does not '
'list runs out. Returns the ids of all its running tasks whose cancellation was requested.';

comment on function reproq.heartbeat(text, integer, timestamptz) is
'The form of runners before 0006: mark the worker seen and renew every lease of p_worker_id '
'once a quarter of it is spent (at most 10 s of it), including leases of tasks the runner '
'never received. Returns the ids of all its running tasks whose cancellation was requested. '
'Current runners call heartbeat(worker, held ids, lease seconds).';


-- Dedup hits no longer lock the task they map onto; notification payloads are cut by bytes;
-- enqueue_many names the timestamp field that is wrong.
--
-- * enqueue_one, enqueue_many (its body, reproq._enqueue_many_unchecked): ON CONFLICT DO UPDATE
--   (a no-op, so that RETURNING yielded the existing id) row-locked a READY or RUNNING task an
--   identical enqueue mapped onto, until the enqueuing transaction ended. For a RUNNING task its
--   worker's heartbeat, complete_many and fail waited on that lock, and the runner's loop with
--   them; a batch hitting several running tasks could deadlock with a completion listing them
--   in another order. Now DO NOTHING, and a second statement reads the existing row's id
--   without locking it; an item whose row finished in between is inserted again.
-- * enqueue_many and release cut their notification payload at 7000 characters; PostgreSQL
--   refuses 8000 bytes, so multi-byte queue names could fail the whole call with 22023. Both
--   now call reproq._notify_queues, which lists whole names within 7000 bytes.
-- * enqueue_many's message for a malformed run_after or expires_at named both fields and left
--   a blank for a missing one; it names the wrong one.
--
-- Bodies restated from 0003 (enqueue_one, enqueue_many) and 0005 (release) with only these
-- changes; signatures, privileges and comments are kept.

create function reproq._notify_queues(p_queues text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_payload text;
begin
    -- PostgreSQL refuses a payload of 8000 bytes or more. Queue names are at most 200
    -- characters but may be multi-byte: list whole names while the payload stays within 7000
    -- bytes (0006: it was cut at 7000 characters, and a call whose names were long in bytes
    -- failed as a whole with 22023).
    select string_agg(q.name, ',' order by q.name)
    into v_payload
    from (
        select d.name, sum(octet_length(d.name) + 1) over (order by d.name) as upto
        from (select distinct u.name from unnest(p_queues) as u (name)) as d
    ) as q
    where q.upto <= 7001;
    if v_payload is not null then
        perform pg_notify('reproq', v_payload);
    end if;
end;
$$;

comment on function reproq._notify_queues(text[]) is
'Internal: one pg_notify on "reproq" listing the distinct queues given (those that got due '
'rows), as many whole names as fit in 7000 bytes; none when the list is empty or null.';


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


create or replace function reproq._enqueue_many_unchecked(
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
    v_results reproq.enqueued [] := array[]::reproq.enqueued [];
    v_item jsonb;
    v_todo integer [];
    v_new reproq.enqueued [];
    v_found reproq.enqueued [];
    v_found_positions integer [];
    v_missing integer [];
    v_missing_hashes bytea [];
    v_created_queues text [];
    v_queues text [] := array[]::text [];
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
                -- One branch per field, so the message names the one that is wrong (0006: one
                -- message named both, with a blank for a missing one).
                when t.item ->> 'run_after'
                    !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                    then array['RQ003', format(
                        'run_after must be an ISO 8601 timestamp with a time zone offset, got %s',
                        t.item -> 'run_after'
                    )]
                when t.item ->> 'expires_at'
                    !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)$'
                    then array['RQ003', format(
                        'expires_at must be an ISO 8601 timestamp with a time zone offset, got %s',
                        t.item -> 'expires_at'
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

    -- Rounds until every item is mapped: the first inserts all of them; a dedup item whose spec
    -- already has a READY or RUNNING row maps onto that row, and one whose row finished between
    -- the insert and the read is inserted again in the next round (READ COMMITTED; under
    -- REPEATABLE READ the insert itself fails with a serialization error instead).
    loop
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
                where v_todo is null or t.position = any(v_todo)
            ) as i
        ),

        inserted as (
            insert into reproq.task_runs as t (
                result_id, queue_name, priority, run_after, task_path, spec_json, spec_hash,
                dedup, max_attempts, timeout_seconds, lock_key, concurrency_key,
                concurrency_limit, metadata_json, expires_at, enqueued_at
            )
            -- Within one call, identical dedup specs collapse onto the first of them: one row per
            -- spec_hash among dedup items, every other item as it is. The same sort puts the rows
            -- in spec_hash order: arbiter checks happen in that order in every call, so two calls
            -- racing on overlapping specs wait for each other, never deadlock.
            select distinct on (l.spec_hash, case when l.dedup then 0 else l.position end)
                l.new_id, l.queue_name, l.priority, l.run_after, l.task_path, l.spec,
                l.spec_hash, l.dedup, l.max_attempts, l.timeout_seconds, l.lock_key,
                l.concurrency_key, l.concurrency_limit, l.metadata, l.expires_at, v_now
            from items as l
            order by l.spec_hash, case when l.dedup then 0 else l.position end, l.position
            on conflict (spec_hash) where dedup and status in ('READY', 'RUNNING')
            -- No row lock on a dedup hit (0006): DO UPDATE locked the existing row until this
            -- transaction ended, so a RUNNING task's worker could not heartbeat or complete it
            -- meanwhile. Its id is read below, in a statement of its own.
            do nothing
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
        ),

        -- Dedup items whose spec met a READY or RUNNING row: mapped by the statement below.
        unmapped as (
            select l.position, l.spec_hash
            from items as l
            where l.dedup and not exists (
                select from inserted as i where i.spec_hash = l.spec_hash and i.dedup
            )
        )

        select
            coalesce(array_agg(
                row(m.position, m.result_id, m.created, m.enqueued_at)::reproq.enqueued
            ), '{}'),
            coalesce(array_agg(distinct m.queue_name) filter (where m.created), '{}'),
            (select array_agg(u.position order by u.position) from unmapped as u),
            (select array_agg(u.spec_hash order by u.position) from unmapped as u)
        into v_new, v_created_queues, v_missing, v_missing_hashes
        from mapped as m;
        v_results := v_results || v_new;
        v_queues := v_queues || v_created_queues;
        exit when v_missing is null;

        -- A new statement, so a new snapshot: it sees the row each insert met, unless that row
        -- has finished since, in which case the item is inserted again on the next round.
        select
            coalesce(array_agg(row(u.position, t.result_id, false, t.enqueued_at)::reproq.enqueued), '{}'),
            coalesce(array_agg(u.position), '{}')
        into v_found, v_found_positions
        from unnest(v_missing, v_missing_hashes) as u (position, spec_hash)
        inner join reproq.task_runs as t
            on t.spec_hash = u.spec_hash and t.dedup and t.status in ('READY', 'RUNNING');
        v_results := v_results || v_found;
        v_todo := array(select p.p from unnest(v_missing) as p (p) where p.p <> all(v_found_positions));
        exit when cardinality(v_todo) = 0;
    end loop;

    -- One notification per call, never per row: runners listening on "reproq" wake up.
    perform reproq._notify_queues(v_queues);

    return query select r.* from unnest(v_results) as r order by r.position;
end;
$$;


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
