#!/usr/bin/env python3
"""Weir against asyncpg (pure protocol implementation, binary everywhere).

asyncpg never binds on the client: every query with arguments is Parse of a
*named* statement, Describe (it encodes arguments with the types Weir puts in
ParameterDescription, so Weir must infer $n types, e.g. from INSERT target
columns or comparisons) and Bind/Execute with binary parameters and binary
result columns.  A type OID asyncpg has no built-in codec for makes it query
pg_catalog.pg_type, which Weir does not have yet: such a failure means Weir
reported an unexpected OID.  conn.execute() without arguments uses the
simple protocol.

    WEIR_PORT=5466 ~/.cache/weir-pyenv/bin/python test_asyncpg.py
"""

import asyncio
import uuid

import asyncpg

from weirtest import (BYTEA_DDL, BYTEA_ROWS, DBNAME, EXPECT_VERSION_NUM, HOST, PORT, TYPES_COLUMNS,
                      TYPES_DDL, TYPES_OIDS, TYPES_ROWS, USER, CheckFailed, check, eq, eq_rows,
                      refresh_sql, run)

P = "apg_"  # table name prefix: the scripts can share one server


async def connect():
    return await asyncpg.connect(host=HOST, port=PORT, user=USER, database=DBNAME, timeout=10,
                                 server_settings={"application_name": "weir-test-asyncpg"})


def sync(coro_fn):
    """Turn an async check into a plain function for the harness."""
    def wrapper():
        asyncio.run(coro_fn())
    wrapper.__name__ = coro_fn.__name__
    return wrapper


def sqlstate(exc):
    return getattr(exc, "sqlstate", None)


async def expect_sqlstate_async(coro, state, what):
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        if sqlstate(exc) != state:
            raise CheckFailed(f"{what}: expected SQLSTATE {state}, got {sqlstate(exc)!r}: {exc!r}") from exc
        return exc
    raise CheckFailed(f"{what}: expected an error with SQLSTATE {state}, but it succeeded")


@check
@sync
async def connect_and_settings():
    conn = await connect()
    try:
        if EXPECT_VERSION_NUM:
            v = conn.get_server_version()  # asyncpg spells 14.13 as major=14, micro=13
            eq((v.major, v.micro), (14, 13), "server version (from ParameterStatus server_version)")
            eq(await conn.fetchval("SHOW server_version"), "14.13", "SHOW server_version")
        eq(conn.get_settings().application_name, "weir-test-asyncpg", "application_name ParameterStatus")
        eq(await conn.fetchval("SELECT 1"), 1, "SELECT 1")
        eq(await conn.fetchval("SELECT $1::int + 1", 41), 42, "SELECT $1::int + 1")
        await conn.execute("SET statement_timeout = '5s'")
        eq(await conn.fetchval("SHOW statement_timeout"), "5s", "SHOW statement_timeout")
        await conn.execute("RESET statement_timeout")
        eq(await conn.fetchval("SHOW statement_timeout"), "0", "SHOW statement_timeout after RESET")
    finally:
        await conn.close()


@check
@sync
async def types_roundtrip():
    table = P + "types"
    conn = await connect()
    try:
        await conn.execute(TYPES_DDL.format(table=table))
        cols = ", ".join(TYPES_COLUMNS)
        marks = ", ".join(f"${i + 1}" for i in range(len(TYPES_COLUMNS)))
        insert = await conn.prepare(f"INSERT INTO {table} ({cols}) VALUES ({marks})")
        # The parameter types Weir inferred from the INSERT's target columns.
        got_oids = [t.oid for t in insert.get_parameters()]
        eq(got_oids, [TYPES_OIDS[c] for c in TYPES_COLUMNS], "ParameterDescription OIDs of the INSERT")
        for row in TYPES_ROWS:
            await insert.fetch(*row)
        select = await conn.prepare(f"SELECT {cols} FROM {table} ORDER BY id")
        eq([a.type.oid for a in select.get_attributes()], [TYPES_OIDS[c] for c in TYPES_COLUMNS],
           "RowDescription OIDs")
        eq_rows(await select.fetch(), TYPES_ROWS, "SELECT all types (binary)")
        r = TYPES_ROWS[0]
        got = await conn.fetch(f"SELECT id FROM {table} WHERE big = $1 AND price = $2 AND day = $3 "
                               f"AND at = $4 AND at_tz = $5 AND active = $6 AND score = $7 AND name = $8",
                               r[1], r[5], r[6], r[7], r[8], r[4], r[3], r[2])
        eq_rows(got, [(1,)], "WHERE with one parameter of each type")
    finally:
        await conn.close()


@check
@sync
async def uuid_roundtrip():
    # asyncpg asks for binary results and encodes parameters in binary with
    # the types Weir describes: `$1::uuid` is a uuid parameter (16 bytes).
    table = P + "uuid"
    conn = await connect()
    try:
        await conn.execute(f"CREATE TABLE {table} (id UUID PRIMARY KEY, n INT)")
        ids = [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), uuid.uuid4()]
        insert = await conn.prepare(f"INSERT INTO {table} VALUES ($1::uuid, $2)")
        eq([t.name for t in insert.get_parameters()], ["uuid", "int4"], "parameter types")
        for n, u in enumerate(ids):
            await insert.fetch(u, n)
        # Text input in Postgres's other spellings is normalized.
        await conn.execute(f"INSERT INTO {table} VALUES ('{{B0EEBC999C0B4EF8BB6D6BB9BD380A11}}', 9)")
        got = await conn.fetch(f"SELECT id, n FROM {table} ORDER BY n")
        eq([(r["id"], r["n"]) for r in got],
           [(ids[0], 0), (ids[1], 1), (uuid.UUID("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 9)],
           "uuid values read back (binary)")
        eq(await conn.fetchval(f"SELECT n FROM {table} WHERE id = $1::uuid", ids[1]), 1,
           "uuid parameter in WHERE")
        await expect_sqlstate_async(conn.execute(f"INSERT INTO {table} VALUES ('nope', 5)"), "22P02",
                                    "bad uuid text")
        await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


@check
@sync
async def bytea_roundtrip():
    table = P + "bytea"
    conn = await connect()
    try:
        await conn.execute(BYTEA_DDL.format(table=table))
        # Output side on its own: rows written with decode() and a text parameter.
        await conn.executemany(f"INSERT INTO {table} VALUES ($1, decode($2, 'hex'))",
                               [(100 + i, None if b is None else b.hex()) for i, b in BYTEA_ROWS])
        got = await conn.fetch(f"SELECT id - 100, b FROM {table} WHERE id >= 100 ORDER BY id")
        eq_rows(got, BYTEA_ROWS, "bytea output (rows written with decode())")
        # Input side: binary bytea parameters.
        await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2)", BYTEA_ROWS)
        got = await conn.fetch(f"SELECT id, b FROM {table} WHERE id < 100 ORDER BY id")
        eq_rows(got, BYTEA_ROWS, "bytea parameters (binary)")
    finally:
        await conn.close()


@check
@sync
async def materialized_view():
    src, view = P + "mv_src", P + "mv"
    conn = await connect()
    try:
        await conn.execute(f"CREATE TABLE {src} (id INT PRIMARY KEY, grp TEXT NOT NULL, amount INT)")
        await conn.execute(f"CREATE MATERIALIZED VIEW {view} AS "
                           f"SELECT grp, count(*) AS n, sum(amount) AS total FROM {src} GROUP BY grp")

        async def read(min_n):
            if refresh_sql(view):
                await conn.execute(refresh_sql(view))
            return await conn.fetch(f"SELECT grp, n, total FROM {view} WHERE n >= $1 ORDER BY grp", min_n)

        await conn.executemany(f"INSERT INTO {src} VALUES ($1, $2, $3)", [(1, "a", 10), (2, "a", 5), (3, "b", 7)])
        eq_rows(await read(0), [("a", 2, 15), ("b", 1, 7)], "view after INSERT")
        eq(await conn.execute(f"UPDATE {src} SET amount = $1 WHERE id = $2", 100, 2), "UPDATE 1", "UPDATE tag")
        eq_rows(await read(0), [("a", 2, 110), ("b", 1, 7)], "view after UPDATE")
        eq(await conn.execute(f"DELETE FROM {src} WHERE grp = $1", "b"), "DELETE 1", "DELETE tag")
        eq_rows(await read(0), [("a", 2, 110)], "view after DELETE")
        eq_rows(await read(3), [], "view with a filter parameter")
    finally:
        await conn.close()


@check
@sync
async def transactions():
    table = P + "tx"
    conn, reader = await connect(), await connect()
    try:
        await conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")

        async def ids():
            return [r[0] for r in await reader.fetch(f"SELECT id FROM {table} ORDER BY id")]

        class Abort(Exception):
            pass

        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "rolled back")
                eq(conn.is_in_transaction(), True, "is_in_transaction")
                raise Abort()
        except Abort:
            pass
        eq(await ids(), [], "after rollback")

        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one")
            await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 2, "two")
            eq(await ids(), [], "other session before commit")
            try:
                async with conn.transaction():  # SAVEPOINT
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 3, "undone")
                    raise Abort()
            except Abort:
                pass
        eq(await ids(), [1, 2], "after commit with rolled back savepoint")

        # Isolation options asyncpg turns into BEGIN ISOLATION LEVEL ... READ ONLY.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            eq(await conn.fetchval(f"SELECT count(*) FROM {table}"), 2, "read-only transaction read")

        # An error rolls the block back.
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 4, "lost")
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "dup")
        except asyncpg.UniqueViolationError:
            pass
        else:
            raise CheckFailed("duplicate key inside transaction did not raise UniqueViolationError")
        eq(conn.is_in_transaction(), False, "is_in_transaction after failed block")
        eq(await ids(), [1, 2], "failed block changed nothing")
    finally:
        await conn.close()
        await reader.close()


@check
@sync
async def errors():
    table = P + "err"
    conn = await connect()
    try:
        await conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT NOT NULL)")
        e = await expect_sqlstate_async(conn.fetch("SELECT * FROM apg_no_such_table"), "42P01", "undefined table")
        if not isinstance(e, asyncpg.UndefinedTableError):
            raise CheckFailed(f"expected UndefinedTableError, got {type(e).__name__}")
        await expect_sqlstate_async(conn.execute("SELEC 1"), "42601", "syntax error (simple protocol)")
        await expect_sqlstate_async(conn.fetch("SELEC $1", 1), "42601", "syntax error (extended protocol)")
        await expect_sqlstate_async(conn.fetch(f"SELECT nope FROM {table} WHERE id = $1", 1), "42703",
                                    "undefined column")
        await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "x")
        await expect_sqlstate_async(conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "y"), "23505",
                                    "unique violation")
        await expect_sqlstate_async(conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", 2, None), "23502",
                                    "not-null violation")
        eq(await conn.fetchval(f"SELECT count(*) FROM {table}"), 1, "count after errors")
    finally:
        await conn.close()


@check
@sync
async def prepared_statements():
    table = P + "prep"
    conn = await connect()
    try:
        await conn.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, label TEXT, x DOUBLE PRECISION)")
        insert = await conn.prepare(f"INSERT INTO {table} VALUES ($1, $2, $3)")
        for i in range(50):
            await insert.fetch(i, f"row {i}", i / 4)
        lookup = await conn.prepare(f"SELECT label, x FROM {table} WHERE id = $1")
        eq([t.oid for t in lookup.get_parameters()], [20], "ParameterDescription of id = $1 (bigint)")
        eq([(a.name, a.type.oid) for a in lookup.get_attributes()], [("label", 25), ("x", 701)],
           "RowDescription of the prepared SELECT")
        for i in range(50):
            eq_rows(await lookup.fetch(i), [(f"row {i}", i / 4)], f"prepared lookup id={i}")
        eq(await lookup.fetchrow(999), None, "prepared lookup of a missing id")
        ranged = await conn.prepare(f"SELECT count(*) FROM {table} WHERE id >= $1 AND id < $2")
        for i in range(10):
            eq(await ranged.fetchval(i, i + 10), 10, f"prepared range count [{i}, {i + 10})")
        # A cursor over a prepared statement (portal with a row limit, inside a transaction).
        async with conn.transaction():
            cur = await conn.cursor(f"SELECT id FROM {table} ORDER BY id")
            eq([r[0] for r in await cur.fetch(5)], [0, 1, 2, 3, 4], "portal first batch")
            eq([r[0] for r in await cur.fetch(3)], [5, 6, 7], "portal second batch")
    finally:
        await conn.close()


if __name__ == "__main__":
    run("asyncpg")
