-- reproq 0004: the lease columns are empty outside RUNNING.
--
-- task_runs_lease_iff_running says a RUNNING row holds all three lease columns, and that a row
-- in any other status does not hold all three; it let a row leave RUNNING with some of them
-- still set. Since 0003, complete_many and set_logs_uris take a lease-token match to mean
-- "RUNNING" (their plans look rows up by primary key and nothing else), so a row left FAILED
-- with its old token by a hand-written UPDATE could still be completed by a late worker.
-- Every reproq function already clears all three when a task leaves RUNNING (complete_many,
-- fail, release, reclaim); this constraint makes that a rule of the table.
--
-- Adding it checks the existing rows under the ALTER TABLE's lock (a sequential scan of
-- task_runs: about a second per million rows on a small machine).

alter table reproq.task_runs
add constraint task_runs_lease_only_while_running check (
    status = 'RUNNING'
    or (leased_by is null and leased_until is null and lease_token is null)
);

comment on constraint task_runs_lease_only_while_running on reproq.task_runs is
'Outside RUNNING no lease column is set, so a lease token match implies a RUNNING row.';
