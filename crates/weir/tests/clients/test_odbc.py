#!/usr/bin/env python3
"""Weir through ODBC: pyodbc + unixODBC + psqlODBC ("PostgreSQL Unicode").

DSN-less connection string; the driver is the one Debian's odbc-postgresql
registers in /etc/odbcinst.ini.  psqlODBC does its own work at connect time:

    SET DateStyle = 'ISO';SET extra_float_digits = 2;show transaction_isolation
    select oid, typbasetype from pg_type where typname = 'lo'

(the second one is fatal if it fails, so ODBC needs pg_catalog.pg_type with
oid, typbasetype and typname, even if it returns no row).  With
UseServerSidePrepare=1 (the default) `?` parameters go through Parse/Bind
with the OIDs psqlODBC picks from the ODBC SQL types.  BoolsAsChar=0 makes
booleans SQL_BIT (Python bool) instead of the legacy '1'/'0' strings.

    WEIR_PORT=5466 ~/.cache/weir-pyenv/bin/python test_odbc.py
"""

import datetime as dt

import pyodbc

from weirtest import (BYTEA_DDL, BYTEA_ROWS, DBNAME, EXPECT_VERSION_NUM, HOST, PORT, TYPES_COLUMNS,
                      TYPES_DDL, TYPES_ROWS, USER, UTC, CheckFailed, check, eq, eq_rows,
                      expect_sqlstate, refresh_sql, run)

P = "odbc_"  # table name prefix: the scripts can share one server

CONN_STR = (
    "Driver={PostgreSQL Unicode};"
    f"Server={HOST};Port={PORT};Database={DBNAME};Uid={USER};Pwd=;"
    "BoolsAsChar=0;UseServerSidePrepare=1;"
    # Session TimeZone = UTC, so timestamptz text is the same on Weir (which
    # prints UTC) and on a reference Postgres.
    "ConnSettings=SET TIME ZONE 'UTC';"
)


def connect(autocommit=True):
    return pyodbc.connect(CONN_STR, autocommit=autocommit, timeout=10)


def sqlstate(exc):
    # pyodbc puts the SQLSTATE first in args; psqlODBC passes the server's through.
    return exc.args[0] if exc.args else None


def odbc_rows(rows):
    """ODBC has no timezone-aware timestamps: psqlODBC returns timestamptz
    as a naive datetime in the session time zone (UTC here)."""
    out = []
    for r in rows:
        out.append(tuple(v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo else v
                         for v in r))
    return out


def scalar(cur, sql, *params):
    rows = cur.execute(sql, *params).fetchall()
    if len(rows) != 1 or len(rows[0]) != 1:
        raise CheckFailed(f"{sql}: expected one value, got {rows!r}")
    return rows[0][0]


@check
def connect_and_settings():
    conn = connect()
    try:
        eq(conn.getinfo(pyodbc.SQL_DBMS_NAME), "PostgreSQL", "SQL_DBMS_NAME")
        ver = conn.getinfo(pyodbc.SQL_DBMS_VER)
        if EXPECT_VERSION_NUM and not ver.startswith("14."):
            raise CheckFailed(f"SQL_DBMS_VER: expected 14.x, got {ver!r}")
        cur = conn.cursor()
        eq(scalar(cur, "SELECT 1"), 1, "SELECT 1")
        eq(scalar(cur, "SHOW TimeZone"), "UTC", "TimeZone from ConnSettings")
        cur.execute("SET application_name = 'odbc-test'")
        eq(scalar(cur, "SHOW application_name"), "odbc-test", "SHOW after SET")
    finally:
        conn.close()


@check
def types_roundtrip():
    table = P + "types"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(TYPES_DDL.format(table=table))
        cols = ", ".join(TYPES_COLUMNS)
        marks = ", ".join(["?"] * len(TYPES_COLUMNS))
        rows = odbc_rows(TYPES_ROWS)  # timestamptz sent as naive UTC
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
        cur.execute(f"SELECT {cols} FROM {table} ORDER BY id")
        eq([d[0] for d in cur.description], TYPES_COLUMNS, "column names")
        eq_rows(cur.fetchall(), rows, "SELECT all types")
        r = rows[0]
        got = cur.execute(f"SELECT id FROM {table} WHERE big = ? AND price = ? AND day = ? AND at = ? "
                          f"AND active = ? AND name = ?", r[1], r[5], r[6], r[7], r[4], r[2]).fetchall()
        eq_rows(got, [(1,)], "WHERE with parameters")
    finally:
        conn.close()


@check
def bytea_roundtrip():
    table = P + "bytea"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(BYTEA_DDL.format(table=table))
        cur.executemany(f"INSERT INTO {table} VALUES (?, decode(?, 'hex'))",
                        [(100 + i, None if b is None else b.hex()) for i, b in BYTEA_ROWS])
        got = cur.execute(f"SELECT id - 100, b FROM {table} WHERE id >= 100 ORDER BY id").fetchall()
        eq_rows(got, BYTEA_ROWS, "bytea output (rows written with decode())")
        cur.executemany(f"INSERT INTO {table} VALUES (?, ?)", BYTEA_ROWS)
        got = cur.execute(f"SELECT id, b FROM {table} WHERE id < 100 ORDER BY id").fetchall()
        eq_rows(got, BYTEA_ROWS, "bytea parameters (SQL_VARBINARY)")
    finally:
        conn.close()


@check
def materialized_view():
    src, view = P + "mv_src", P + "mv"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {src} (id INT PRIMARY KEY, grp TEXT NOT NULL, amount INT)")
        cur.execute(f"CREATE MATERIALIZED VIEW {view} AS "
                    f"SELECT grp, count(*) AS n, sum(amount) AS total FROM {src} GROUP BY grp")

        def read():
            if refresh_sql(view):
                cur.execute(refresh_sql(view))
            return cur.execute(f"SELECT grp, n, total FROM {view} ORDER BY grp").fetchall()

        cur.executemany(f"INSERT INTO {src} VALUES (?, ?, ?)", [(1, "a", 10), (2, "a", 5), (3, "b", 7)])
        eq_rows(read(), [("a", 2, 15), ("b", 1, 7)], "view after INSERT")
        eq(cur.execute(f"UPDATE {src} SET amount = ? WHERE id = ?", 100, 2).rowcount, 1, "UPDATE rowcount")
        eq_rows(read(), [("a", 2, 110), ("b", 1, 7)], "view after UPDATE")
        eq(cur.execute(f"DELETE FROM {src} WHERE grp = ?", "b").rowcount, 1, "DELETE rowcount")
        eq_rows(read(), [("a", 2, 110)], "view after DELETE")
    finally:
        conn.close()


@check
def transactions():
    table = P + "tx"
    ddl = connect()
    ddl.cursor().execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
    ddl.close()
    reader = connect()
    conn = connect(autocommit=False)  # psqlODBC sends BEGIN before the first statement
    try:
        def ids():
            return [r[0] for r in reader.cursor().execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]

        cur = conn.cursor()
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 1, "rolled back")
        conn.rollback()
        eq(ids(), [], "after rollback")
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 1, "one")
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 2, "two")
        eq(ids(), [], "other session before commit")
        conn.commit()
        eq(ids(), [1, 2], "after commit")
        # An error inside the transaction, then rollback.
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 3, "lost")
        expect_sqlstate(lambda: cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 1, "dup"), "23505", sqlstate,
                        "duplicate key inside transaction")
        conn.rollback()
        eq(ids(), [1, 2], "failed transaction changed nothing")
    finally:
        conn.close()
        reader.close()


@check
def errors():
    table = P + "err"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT NOT NULL)")
        expect_sqlstate(lambda: cur.execute("SELECT * FROM odbc_no_such_table"), "42P01", sqlstate, "undefined table")
        expect_sqlstate(lambda: cur.execute("SELEC 1"), "42601", sqlstate, "syntax error")
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 1, "x")
        expect_sqlstate(lambda: cur.execute(f"INSERT INTO {table} VALUES (?, ?)", 1, "y"), "23505", sqlstate,
                        "unique violation")
        eq(scalar(cur, f"SELECT count(*) FROM {table}"), 1, "count after errors")
    finally:
        conn.close()


@check
def prepared_statements():
    # pyodbc prepares a statement once and re-executes it while the SQL text
    # stays the same; with UseServerSidePrepare=1 that is one Parse, many Binds.
    table = P + "prep"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        for i in range(30):
            cur.execute(f"INSERT INTO {table} VALUES (?, ?, ?)", i, f"row {i}", i / 4)
        for i in range(30):
            got = cur.execute(f"SELECT label, x FROM {table} WHERE id = ?", i).fetchall()
            eq_rows(got, [(f"row {i}", i / 4)], f"prepared lookup id={i}")
    finally:
        conn.close()


if __name__ == "__main__":
    run("odbc")
