#!/usr/bin/env python3
"""Weir against psycopg2 (libpq, simple query protocol).

psycopg2 binds parameters on the client: %s placeholders become quoted SQL
literals ('...'::date, '\\x..'::bytea, ...) sent with the simple protocol, so
this exercises Weir's literal parsing and its text result encoding.  With
autocommit off (psycopg2's default) the driver sends BEGIN before the first
statement; DDL then runs at once inside that block (see `ddl_by_default`).
Most checks use autocommit connections.  (Note: psycopg2 >= 2.9's `with conn:` opens a transaction even
in autocommit mode, so connections are wrapped in contextlib.closing.)

    WEIR_PORT=5466 ~/.cache/weir-pyenv/bin/python test_psycopg2.py
"""

from contextlib import closing

import psycopg2
import psycopg2.errors

from weirtest import (BYTEA_DDL, BYTEA_ROWS, DBNAME, EXPECT_VERSION_NUM, HOST, PORT, TYPES_COLUMNS,
                      TYPES_DDL, TYPES_OIDS, TYPES_ROWS, USER, CheckFailed, check, eq, eq_rows,
                      expect_sqlstate, refresh_sql, run)

P = "pg2_"  # table name prefix: the scripts can share one server


def connect(autocommit=True):
    conn = psycopg2.connect(host=HOST, port=PORT, user=USER, dbname=DBNAME,
                            application_name="weir-test-psycopg2", connect_timeout=10)
    conn.autocommit = autocommit
    return conn


def pgcode(exc):
    return getattr(exc, "pgcode", None)


def scalar(cur, sql, params=None):
    cur.execute(sql, params)
    rows = cur.fetchall()
    if len(rows) != 1 or len(rows[0]) != 1:
        raise CheckFailed(f"{sql}: expected one value, got {rows!r}")
    return rows[0][0]


@check
def connect_and_settings():
    with closing(connect()) as conn, conn.cursor() as cur:
        if EXPECT_VERSION_NUM:
            eq(conn.server_version, EXPECT_VERSION_NUM, "libpq server_version (from ParameterStatus)")
            eq(scalar(cur, "SHOW server_version"), "14.13", "SHOW server_version")
        eq(conn.get_parameter_status("application_name"), "weir-test-psycopg2",
           "application_name ParameterStatus")
        eq(scalar(cur, "SELECT 1"), 1, "SELECT 1")
        cur.execute("SET application_name = 'changed'")
        eq(scalar(cur, "SHOW application_name"), "changed", "SHOW after SET")
        # Weir sends ParameterStatus when a reported setting changes.
        eq(conn.get_parameter_status("application_name"), "changed", "ParameterStatus after SET")
        # RESET goes back to the session default, which is the startup packet's value.
        cur.execute("RESET application_name")
        eq(scalar(cur, "SHOW application_name"), "weir-test-psycopg2", "SHOW after RESET")


@check
def types_roundtrip():
    table = P + "types"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(TYPES_DDL.format(table=table))
        cols = ", ".join(TYPES_COLUMNS)
        marks = ", ".join(["%s"] * len(TYPES_COLUMNS))
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", TYPES_ROWS)
        cur.execute(f"SELECT {cols} FROM {table} ORDER BY id")
        got = cur.fetchall()
        # RowDescription: the Postgres type OIDs of the declared column types.
        for d in cur.description:
            eq(d.type_code, TYPES_OIDS[d.name], f"type OID of column {d.name}")
        eq_rows(got, TYPES_ROWS, "SELECT all types")


@check
def bytea_roundtrip():
    # psycopg2 sends bytes as the standard hex literal '\x0001ff'::bytea,
    # which Postgres decodes to 3 bytes.  Rows written with decode() (no
    # literal) check the output side on its own.
    table = P + "bytea"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(BYTEA_DDL.format(table=table))
        cur.executemany(f"INSERT INTO {table} VALUES (%s, decode(%s, 'hex'))",
                        [(100 + i, None if b is None else b.hex()) for i, b in BYTEA_ROWS])
        cur.execute(f"SELECT id - 100, b FROM {table} WHERE id >= 100 ORDER BY id")
        eq(cur.description[1].type_code, 17, "bytea type OID")
        got = [(i, None if b is None else bytes(b)) for i, b in cur.fetchall()]  # memoryview -> bytes
        eq_rows(got, BYTEA_ROWS, "bytea output (rows written with decode())")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)",
                        [(i, None if b is None else psycopg2.Binary(b)) for i, b in BYTEA_ROWS])
        cur.execute(f"SELECT id, b FROM {table} WHERE id < 100 ORDER BY id")
        got = [(i, None if b is None else bytes(b)) for i, b in cur.fetchall()]
        eq_rows(got, BYTEA_ROWS, "bytea written as '\\x..'::bytea literals")


@check
def params_in_where():
    table = P + "where"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(TYPES_DDL.format(table=table))
        cur.executemany(f"INSERT INTO {table} (id, big, name, price, day) VALUES (%s, %s, %s, %s, %s)",
                        [(r[0], r[1], r[2], r[5], r[6]) for r in TYPES_ROWS])
        cur.execute(f"SELECT id FROM {table} WHERE day = %s AND price = %s AND name = %s",
                    (TYPES_ROWS[1][6], TYPES_ROWS[1][5], TYPES_ROWS[1][2]))
        eq_rows(cur.fetchall(), [(2,)], "WHERE date/numeric/text params")
        cur.execute(f"SELECT id FROM {table} WHERE big > %s ORDER BY id", (0,))
        eq_rows(cur.fetchall(), [(1,)], "WHERE bigint param")
        cur.execute(f"SELECT id FROM {table} WHERE big IS NULL")
        eq_rows(cur.fetchall(), [(3,)], "IS NULL")


@check
def materialized_view():
    src, view = P + "mv_src", P + "mv"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {src} (id INT PRIMARY KEY, grp TEXT NOT NULL, amount INT)")
        cur.execute(f"CREATE MATERIALIZED VIEW {view} AS "
                    f"SELECT grp, count(*) AS n, sum(amount) AS total FROM {src} GROUP BY grp")

        def read():
            if refresh_sql(view):
                cur.execute(refresh_sql(view))
            cur.execute(f"SELECT grp, n, total FROM {view} ORDER BY grp")
            return cur.fetchall()

        eq_rows(read(), [], "empty view")
        cur.executemany(f"INSERT INTO {src} VALUES (%s, %s, %s)",
                        [(1, "a", 10), (2, "a", 5), (3, "b", 7)])
        eq_rows(read(), [("a", 2, 15), ("b", 1, 7)], "view after INSERT")
        cur.execute(f"UPDATE {src} SET amount = %s WHERE id = %s", (100, 2))
        eq(cur.rowcount, 1, "UPDATE rowcount")
        eq_rows(read(), [("a", 2, 110), ("b", 1, 7)], "view after UPDATE")
        cur.execute(f"DELETE FROM {src} WHERE grp = %s", ("b",))
        eq(cur.rowcount, 1, "DELETE rowcount")
        eq_rows(read(), [("a", 2, 110)], "view after DELETE")


@check
def transactions():
    table = P + "tx"
    with closing(connect()) as ddl, ddl.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
    reader = connect()
    rcur = reader.cursor()

    def ids():
        rcur.execute(f"SELECT id FROM {table} ORDER BY id")
        return [r[0] for r in rcur.fetchall()]

    # psycopg2's own transaction handling: BEGIN is sent implicitly.
    conn = connect(autocommit=False)
    cur = conn.cursor()
    cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "rolled back"))
    eq(conn.get_transaction_status(), psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
       "ReadyForQuery status inside transaction")
    conn.rollback()
    eq(ids(), [], "after rollback")

    cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "one"))
    cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, "two"))
    eq(ids(), [], "other session before commit")  # writes apply at COMMIT
    conn.commit()
    eq(conn.get_transaction_status(), psycopg2.extensions.TRANSACTION_STATUS_IDLE,
       "ReadyForQuery status after commit")
    eq(ids(), [1, 2], "after commit")

    # Savepoints.
    cur.execute(f"INSERT INTO {table} VALUES (3, 'kept')")
    cur.execute("SAVEPOINT s1")
    cur.execute(f"INSERT INTO {table} VALUES (4, 'undone')")
    cur.execute("ROLLBACK TO SAVEPOINT s1")
    cur.execute("RELEASE SAVEPOINT s1")
    conn.commit()
    eq(ids(), [1, 2, 3], "after savepoint rollback + commit")

    # An error aborts the transaction (25P02) until rollback.
    cur.execute(f"INSERT INTO {table} VALUES (5, 'lost')")
    expect_sqlstate(lambda: cur.execute(f"INSERT INTO {table} VALUES (1, 'dup')"), "23505", pgcode,
                    "duplicate key inside transaction")
    eq(conn.get_transaction_status(), psycopg2.extensions.TRANSACTION_STATUS_INERROR,
       "ReadyForQuery status after error")
    expect_sqlstate(lambda: cur.execute("SELECT 1"), "25P02", pgcode, "statement in failed transaction")
    conn.rollback()
    eq(ids(), [1, 2, 3], "failed transaction changed nothing")
    conn.close()
    reader.close()


@check
def ddl_by_default():
    # psycopg2's default: BEGIN before the first statement, then commit().
    # Weir runs DDL in such a block at once; the view sees the rows
    # committed with it.
    conn = connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {P}ddl (id INT PRIMARY KEY, v INT)")
        cur.execute(f"CREATE MATERIALIZED VIEW {P}ddl_sum AS SELECT sum(v) AS s FROM {P}ddl")
        cur.execute(f"INSERT INTO {P}ddl VALUES (1, 10), (2, 32)")
        conn.commit()
        eq(scalar(cur, f"SELECT s FROM {P}ddl_sum"), 42, "view over a table made in a block")
        conn.commit()
        cur.execute(f"INSERT INTO {P}ddl VALUES (3, 1)")
        expect_sqlstate(lambda: cur.execute(f"DROP TABLE {P}ddl"), "25001", pgcode,
                        "DDL after the block's own writes")
        conn.rollback()
        cur.execute(f"DROP MATERIALIZED VIEW {P}ddl_sum")
        cur.execute(f"DROP TABLE {P}ddl")
        conn.commit()
    finally:
        conn.close()


@check
def errors():
    table = P + "err"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT NOT NULL)")
        e = expect_sqlstate(lambda: cur.execute("SELECT * FROM pg2_no_such_table"), "42P01", pgcode,
                            "undefined table")
        if not isinstance(e, psycopg2.errors.UndefinedTable):
            raise CheckFailed(f"expected psycopg2.errors.UndefinedTable, got {type(e).__name__}")
        expect_sqlstate(lambda: cur.execute("SELEC 1"), "42601", pgcode, "syntax error")
        expect_sqlstate(lambda: cur.execute(f"SELECT nope FROM {table}"), "42703", pgcode, "undefined column")
        cur.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        expect_sqlstate(lambda: cur.execute(f"INSERT INTO {table} VALUES (1, 'y')"), "23505", pgcode,
                        "unique violation")
        expect_sqlstate(lambda: cur.execute(f"INSERT INTO {table} VALUES (2, NULL)"), "23502", pgcode,
                        "not-null violation")
        expect_sqlstate(lambda: cur.execute(f"CREATE TABLE {table} (id INT)"), "42P07", pgcode,
                        "duplicate table")
        # The connection is still usable after errors.
        eq(scalar(cur, f"SELECT count(*) FROM {table}"), 1, "count after errors")


@check
def repeated_statement():
    # psycopg2 has no server-side prepared statements; run the same
    # parameterized statements many times instead.
    table = P + "rep"
    with closing(connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)",
                        [(i, f"row {i}", i / 4) for i in range(50)])
        for i in range(0, 50, 3):
            cur.execute(f"SELECT label, x FROM {table} WHERE id = %s", (i,))
            eq_rows(cur.fetchall(), [(f"row {i}", i / 4)], f"lookup id={i}")
        eq(scalar(cur, f"SELECT count(*) FROM {table} WHERE id < %s", (25,)), 25, "count(*) with a parameter")


if __name__ == "__main__":
    run("psycopg2")
