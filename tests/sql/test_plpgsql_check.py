"""plpgsql_check over every PL/pgSQL function of the reproq schema.

sqlfluff sees a PL/pgSQL body as one string literal; plpgsql_check parses and plans every
statement in it. We ask for every warning class (all_warnings, performance, extra, security,
compatibility) and accept none: the list below is where a warning we deliberately accept would
go, with the reason. It is empty.
"""

import pytest

ACCEPTED_WARNINGS: set[tuple[str, str]] = set()  # (function signature, message)

PLPGSQL_FUNCTIONS = """
    select p.oid, p.oid::regprocedure::text
    from pg_proc as p
    join pg_namespace as n on n.oid = p.pronamespace
    join pg_language as l on l.oid = p.prolang
    where n.nspname = 'reproq' and l.lanname = 'plpgsql'
    order by 2
"""


@pytest.fixture
def checked_cur(cur):
    cur.execute("select 1 from pg_available_extensions where name = 'plpgsql_check'")
    if cur.fetchone() is None:
        pytest.fail("the plpgsql_check extension is not installed in this PostgreSQL "
                    "(Debian: apt-get install postgresql-15-plpgsql-check; `make sysdeps` "
                    "installs it)")
    cur.execute("create extension plpgsql_check")
    return cur


def test_reproq_has_plpgsql_functions_to_check(checked_cur):
    checked_cur.execute(PLPGSQL_FUNCTIONS)
    assert len(checked_cur.fetchall()) >= 10


def test_plpgsql_check_reports_nothing(checked_cur):
    checked_cur.execute(f"""
        select f.signature, r.level, r.message, r.detail, r.lineno, r.statement
        from ({PLPGSQL_FUNCTIONS}) as f (oid, signature)
        cross join lateral plpgsql_check_function_tb(
            f.oid,
            fatal_errors => false,
            all_warnings => true,
            other_warnings => true,
            performance_warnings => true,
            extra_warnings => true,
            security_warnings => true,
            compatibility_warnings => true
        ) as r
    """)
    findings = [row for row in checked_cur.fetchall()
                if (row[0], row[2]) not in ACCEPTED_WARNINGS]
    assert findings == [], "\n".join(
        f"{signature} line {lineno} ({statement}): {level}: {message} {detail or ''}"
        for signature, level, message, detail, lineno, statement in findings)


def test_plpgsql_check_catches_a_broken_function(checked_cur):
    # Proves the check above is live: a reference to a missing column is an error.
    checked_cur.execute("""
        create function pg_temp.broken() returns integer language plpgsql as $$
        begin
            return (select t.no_such_column from reproq.task_runs as t limit 1);
        end;
        $$
    """)
    checked_cur.execute("select level, message from plpgsql_check_function_tb("
                        "'pg_temp.broken()'::regprocedure)")
    assert ("error", 'column t.no_such_column does not exist') in checked_cur.fetchall()
