#!/usr/bin/env python3
"""Weir against psycopg 3 (libpq, extended query protocol).

psycopg 3 binds parameters on the server: each execute() is Parse/Bind/
Describe/Execute/Sync with the parameter type OIDs psycopg picks (int2/int4/
int8/numeric by value, date, timestamp[tz], numeric, bytea; 0 = unknown for
str in text format).  `%b` placeholders send a parameter in binary, and
cursor(binary=True) asks for binary results, so the binary checks exercise
Weir's binary decoders and encoders for every type.  executemany() and
`with conn.pipeline()` use libpq pipeline mode (many messages, one Sync).
prepare=True makes a named server-side prepared statement.

    WEIR_PORT=5466 ~/.cache/weir-pyenv/bin/python test_psycopg3.py
"""

import uuid

import psycopg
import psycopg.errors

from weirtest import (BYTEA_DDL, BYTEA_ROWS, DBNAME, EXPECT_VERSION_NUM, HOST, PORT, TYPES_COLUMNS,
                      TYPES_DDL, TYPES_OIDS, TYPES_ROWS, USER, CheckFailed, check, eq, eq_rows,
                      expect_sqlstate, pending, refresh_sql, run)

P = "pg3_"  # table name prefix: the scripts can share one server


def connect(autocommit=True):
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=DBNAME, autocommit=autocommit,
                           application_name="weir-test-psycopg3", connect_timeout=10)


def sqlstate(exc):
    return getattr(exc, "sqlstate", None)


def scalar(cur, sql, params=None, **kw):
    rows = cur.execute(sql, params, **kw).fetchall()
    if len(rows) != 1 or len(rows[0]) != 1:
        raise CheckFailed(f"{sql}: expected one value, got {rows!r}")
    return rows[0][0]


@check
def connect_and_settings():
    with connect() as conn:
        if EXPECT_VERSION_NUM:
            eq(conn.info.server_version, EXPECT_VERSION_NUM, "server_version")
        eq(conn.info.parameter_status("application_name"), "weir-test-psycopg3",
           "application_name ParameterStatus")
        cur = conn.cursor()
        eq(scalar(cur, "SELECT 1"), 1, "SELECT 1")
        eq(scalar(cur, "SELECT %s::int + 1", (41,)), 42, "SELECT $1::int + 1")
        cur.execute("SET TIME ZONE 'UTC'")
        eq(scalar(cur, "SHOW TimeZone"), "UTC", "SHOW TimeZone")
        eq(scalar(cur, "SELECT current_setting('TimeZone')"), "UTC", "current_setting")
        cur.execute("SET extra_float_digits = 3")
        eq(scalar(cur, "SHOW extra_float_digits"), "3", "SHOW extra_float_digits")
        cur.execute("RESET extra_float_digits")
        eq(scalar(cur, "SHOW extra_float_digits"), "1", "SHOW extra_float_digits after RESET")


def _types_roundtrip(binary):
    table = P + ("types_bin" if binary else "types_text")
    with connect() as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(TYPES_DDL.format(table=table))
        cols = ", ".join(TYPES_COLUMNS)
        mark = "%b" if binary else "%s"  # %s: psycopg's choice (text, bytes binary); %b: all binary
        marks = ", ".join([mark] * len(TYPES_COLUMNS))
        for row in TYPES_ROWS:
            cur.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", row)
            eq(cur.rowcount, 1, f"INSERT rowcount for id={row[0]}")
        cur.execute(f"SELECT {cols} FROM {table} ORDER BY id")
        for d in cur.description:
            eq(d.type_code, TYPES_OIDS[d.name], f"type OID of column {d.name}")
        eq(cur.pgresult.fformat(0), 1 if binary else 0, "result column format")
        eq_rows(cur.fetchall(), TYPES_ROWS, f"SELECT all types ({'binary' if binary else 'text'})")
        # Parameters in WHERE, compared on the server.
        r = TYPES_ROWS[0]
        cur.execute(f"SELECT id FROM {table} WHERE big = {mark} AND price = {mark} AND day = {mark} "
                    f"AND at = {mark} AND at_tz = {mark} AND active = {mark} AND score = {mark}",
                    (r[1], r[5], r[6], r[7], r[8], r[4], r[3]))
        eq_rows(cur.fetchall(), [(1,)], "WHERE with one parameter of each type")


@check
def types_roundtrip_text():
    _types_roundtrip(binary=False)


@check
def types_roundtrip_binary():
    _types_roundtrip(binary=True)


@check
def materialized_view():
    src, view = P + "mv_src", P + "mv"
    with connect() as conn:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {src} (id INT PRIMARY KEY, grp TEXT NOT NULL, amount INT)")
        cur.execute(f"CREATE MATERIALIZED VIEW {view} AS "
                    f"SELECT grp, count(*) AS n, sum(amount) AS total FROM {src} GROUP BY grp")
        bcur = conn.cursor(binary=True)  # read the view in binary too

        def read(c):
            if refresh_sql(view):
                conn.execute(refresh_sql(view))
            return c.execute(f"SELECT grp, n, total FROM {view} ORDER BY grp").fetchall()

        cur.executemany(f"INSERT INTO {src} VALUES (%s, %s, %s)", [(1, "a", 10), (2, "a", 5), (3, "b", 7)])
        eq_rows(read(cur), [("a", 2, 15), ("b", 1, 7)], "view after INSERT")
        eq_rows(read(bcur), [("a", 2, 15), ("b", 1, 7)], "view after INSERT (binary)")
        cur.execute(f"UPDATE {src} SET amount = %s WHERE id = %s", (100, 2))
        eq(cur.rowcount, 1, "UPDATE rowcount")
        eq_rows(read(cur), [("a", 2, 110), ("b", 1, 7)], "view after UPDATE")
        cur.execute(f"DELETE FROM {src} WHERE id IN (%s, %s)", (1, 3))
        eq(cur.rowcount, 2, "DELETE rowcount")
        eq_rows(read(bcur), [("a", 1, 100)], "view after DELETE (binary)")


@check
def uuid_roundtrip():
    # psycopg 3 sends uuid.UUID values as type uuid (%b: the 16 bytes) and
    # loads uuid results, text or binary, as uuid.UUID.
    table = P + "uuid"
    u = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    with connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id UUID PRIMARY KEY, n INT)")
        conn.execute(f"INSERT INTO {table} VALUES (%b, %b)", (u, 1))
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (uuid.UUID(int=7), 2))
        for binary in (False, True):
            rows = conn.cursor(binary=binary).execute(
                f"SELECT id, n FROM {table} WHERE id = %b OR n = 2 ORDER BY n", (u,)).fetchall()
            eq_rows(rows, [(u, 1), (uuid.UUID(int=7), 2)], f"uuid results (binary={binary})")
        conn.execute(f"DROP TABLE {table}")


@check
def transactions():
    table = P + "tx"
    with connect() as conn, connect() as reader:
        conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")

        def ids():
            return [r[0] for r in reader.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]

        # conn.transaction(): BEGIN ... COMMIT, or ROLLBACK on an exception.
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "rolled back"))
            eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS, "status in block")
            raise psycopg.Rollback()
        eq(ids(), [], "after rollback")

        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "one"))
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, "two"))
            eq(ids(), [], "other session before commit")
            # A nested transaction() is a SAVEPOINT; rolling it back keeps 1 and 2.
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (3, "undone"))
                raise psycopg.Rollback()
        eq(ids(), [1, 2], "after commit with rolled back savepoint")

        # An error inside the block rolls the whole block back.
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (4, "lost"))
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "dup"))
        except psycopg.errors.UniqueViolation:
            pass
        else:
            raise CheckFailed("duplicate key inside transaction did not raise UniqueViolation")
        eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.IDLE, "status after failed block")
        eq(ids(), [1, 2], "failed block changed nothing")

        # An error inside a nested block (a savepoint) is rolled back to the
        # savepoint: the outer block goes on ("in transaction" again, not
        # "in error") and commits what it did before and after.
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (3, "three"))
            try:
                with conn.transaction():
                    conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "dup"))
            except psycopg.errors.UniqueViolation:
                pass
            eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS,
               "status after ROLLBACK TO SAVEPOINT")
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (4, "four"))
        eq(ids(), [1, 2, 3, 4], "outer block survives a failed savepoint")
        conn.execute(f"DELETE FROM {table} WHERE id > 2")

        # The same by hand, with ROLLBACK TO over the extended protocol as
        # a named prepared statement and as the unnamed one.
        for prepare in (True, False):
            with conn.transaction():
                conn.execute("SAVEPOINT s1")
                try:
                    conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "dup"))
                except psycopg.errors.UniqueViolation:
                    pass
                eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INERROR,
                   f"status after the error (prepare={prepare})")
                conn.execute("ROLLBACK TO SAVEPOINT s1", prepare=prepare, binary=not prepare)
                eq(conn.info.transaction_status, psycopg.pq.TransactionStatus.INTRANS,
                   f"status after ROLLBACK TO (prepare={prepare})")
        eq(ids(), [1, 2], "nothing kept from the failed statements")

    # Non-autocommit connection: psycopg sends BEGIN implicitly.
    with connect(autocommit=False) as conn, connect() as reader:
        conn.execute(f"INSERT INTO {table} VALUES (5, 'five')")
        conn.rollback()
        conn.execute(f"INSERT INTO {table} VALUES (6, 'six')")
        conn.commit()
        got = [r[0] for r in reader.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]
        eq(got, [1, 2, 6], "implicit transactions: rollback then commit")


@check
def errors():
    table = P + "err"
    with connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT NOT NULL)")
        e = expect_sqlstate(lambda: conn.execute("SELECT * FROM pg3_no_such_table"), "42P01", sqlstate,
                            "undefined table")
        if not isinstance(e, psycopg.errors.UndefinedTable):
            raise CheckFailed(f"expected UndefinedTable, got {type(e).__name__}")
        eq(e.diag.severity, "ERROR", "diag severity (S field)")
        eq(e.diag.message_primary, 'relation "pg3_no_such_table" does not exist', "diag message")
        expect_sqlstate(lambda: conn.execute("SELEC 1"), "42601", sqlstate, "syntax error")
        # Errors at Parse/Bind time of the extended protocol, with parameters.
        expect_sqlstate(lambda: conn.execute(f"SELECT nope FROM {table} WHERE id = %s", (1,)), "42703",
                        sqlstate, "undefined column (extended protocol)")
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "x"))
        expect_sqlstate(lambda: conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "y")), "23505",
                        sqlstate, "unique violation")
        expect_sqlstate(lambda: conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, None)), "23502",
                        sqlstate, "not-null violation")
        expect_sqlstate(lambda: conn.execute("SELECT 1/0"), "22012", sqlstate, "division by zero")
        eq(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0], 1, "count after errors")


@check
def error_fields():
    # ErrorResponse fields beyond S/C/M that Postgres >= 9.6 always sends:
    # V (non-localized severity) and, for an unknown relation, P (position).
    with connect() as conn:
        try:
            conn.execute("SELECT * FROM pg3_no_such_table")
        except psycopg.errors.UndefinedTable as e:
            problems = []
            for got, want, what in [(e.diag.severity_nonlocalized, "ERROR", "V field (non-localized severity)"),
                                    (e.diag.statement_position, "15", "P field (position of the table name)")]:
                if got != want:
                    problems.append(f"{what}: expected {want!r}, got {got!r}")
            if problems:
                raise CheckFailed("; ".join(problems))
        else:
            raise CheckFailed("SELECT from a missing table did not fail")


def _bytea(binary):
    table = P + ("bytea_bin" if binary else "bytea_text")
    with connect() as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(BYTEA_DDL.format(table=table))
        # Output side on its own: rows written without a bytea parameter.
        for i, b in BYTEA_ROWS:
            cur.execute(f"INSERT INTO {table} VALUES (%s, decode(%s, 'hex'))",
                        (100 + i, None if b is None else b.hex()))
        cur.execute(f"SELECT id - 100, b FROM {table} WHERE id >= 100 ORDER BY id")
        eq(cur.description[1].type_code, 17, "bytea type OID")
        eq_rows(cur.fetchall(), BYTEA_ROWS, "bytea output (rows written with decode())")
        # Input side: a bytea parameter ($2 typed 17), text (%t) or binary (%b).
        mark = "%b" if binary else "%t"
        for i, b in BYTEA_ROWS:
            cur.execute(f"INSERT INTO {table} VALUES (%s, {mark})", (i, b))
        cur.execute(f"SELECT id, b FROM {table} WHERE id < 100 ORDER BY id")
        eq_rows(cur.fetchall(), BYTEA_ROWS, f"bytea parameters ({mark})")


@check
def bytea_text():
    _bytea(binary=False)


@check
def bytea_binary():
    _bytea(binary=True)


@check
def prepared_statements():
    table = P + "prep"
    with connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        # Explicitly prepared INSERT, executed 40 times.
        for i in range(40):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (i, f"row {i}", i / 4), prepare=True)
        # Explicitly prepared SELECT, text and binary results.
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            for i in range(0, 40, 2):
                got = cur.execute(f"SELECT label, x FROM {table} WHERE id = %s", (i,), prepare=True).fetchall()
                eq_rows(got, [(f"row {i}", i / 4)], f"prepared lookup id={i} binary={binary}")
        # Automatic preparation after prepare_threshold (5) executions.
        cur = conn.cursor()
        for i in range(12):
            eq(scalar(cur, f"SELECT count(*) FROM {table} WHERE id < %s", (i,)), i, f"auto-prepared count<{i}")
        eq(scalar(cur, f"SELECT max(id) FROM {table}"), 39, "max(id)")


@check
def pipeline_and_executemany():
    table = P + "pipe"
    with connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
        cur = conn.cursor()
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(i, f"v{i}") for i in range(100)])
        eq(scalar(cur, f"SELECT count(*) FROM {table}"), 100, "count after executemany")
        with conn.pipeline():
            c1 = conn.execute(f"SELECT v FROM {table} WHERE id = %s", (7,))
            conn.execute(f"UPDATE {table} SET v = %s WHERE id = %s", ("seven", 7))
            c2 = conn.execute(f"SELECT count(*) FROM {table}")
        eq(c1.fetchall(), [("v7",)], "first pipelined SELECT")
        eq(c2.fetchall(), [(100,)], "second pipelined SELECT")
        eq(scalar(cur, f"SELECT v FROM {table} WHERE id = 7"), "seven", "pipelined UPDATE applied")


@pending("result types follow DataFusion, not Postgres")
def result_types_match_postgres():
    # The type OID Postgres 14 gives each expression's result, and the value.
    # Drivers map OIDs to language types (numeric -> Decimal, int4 -> int),
    # so a different OID changes what the application receives.
    table = P + "rtypes"
    cases = [
        ("count(*)", 20, 2), ("sum(i)", 20, 3), ("sum(b)", 1700, None), ("avg(i)", 1700, None),
        ("sum(r)", 700, 2.0), ("min(i)", 23, 1), ("max(i * 2)", 23, 4), ("max(i % 2)", 23, 1),
        ("max(1)", 23, 1), ("max(b)::numeric", 1700, None),
    ]
    with connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, i INT, b BIGINT, r REAL)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 1, 2, 0.5), (2, 2, 3, 1.5)")
        problems = []
        for expr, oid, value in cases:
            cur = conn.execute(f"SELECT {expr} AS x FROM {table}")
            got_oid, got = cur.description[0].type_code, cur.fetchone()[0]
            if got_oid != oid:
                problems.append(f"{expr}: OID {got_oid} (value {got!r}), Postgres sends {oid}")
            elif value is not None and got != value:
                problems.append(f"{expr}: value {got!r}, expected {value!r}")
        # Text form of an unconstrained numeric: Postgres keeps the scale of the input.
        got = conn.execute(f"SELECT b::numeric::text FROM {table} WHERE id = 1").fetchone()[0]
        if got != "2":
            problems.append(f"bigint::numeric::text: {got!r}, Postgres gives '2'")
        if problems:
            raise CheckFailed("; ".join(problems))


if __name__ == "__main__":
    run("psycopg3")
