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
