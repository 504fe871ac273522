#!/usr/bin/env python3
"""Weir under SQLAlchemy 2.x (psycopg2 dialect): Core use and the inspector.

Every check here needs pg_catalog: the dialect's initialize and the inspector read it.
On its first connection the psycopg2 dialect runs (capture/sqlalchemy-psycopg2.txt)

    BEGIN
    SELECT t.oid, typarray FROM pg_type t JOIN pg_namespace ns
        ON typnamespace = ns.oid WHERE typname = 'hstore';   -- fatal if it fails
    ROLLBACK
    select pg_catalog.version()
    select current_schema()
    show transaction isolation level
    show standard_conforming_strings

and the inspector reads pg_catalog (pg_class, pg_namespace, pg_attribute,
pg_type, pg_constraint, pg_index, pg_description, pg_collation, ...); the
exact SQL each inspector method sends is listed in README.md in this
directory.

    WEIR_PORT=5466 ~/.cache/weir-pyenv/bin/python test_sqlalchemy.py
    WEIR_SQL_ECHO=1 ...   # log every statement SQLAlchemy sends (to stderr)
"""

import logging
import os
from decimal import Decimal

import sqlalchemy as sa

from weirtest import DBNAME, EXPECT_VERSION_NUM, HOST, PORT, USER, CheckFailed, check, eq, refresh_sql, run

P = "sa_"  # table name prefix: the scripts can share one server

if os.environ.get("WEIR_SQL_ECHO"):
    logging.basicConfig()
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)

_engine = None


def engine():
    global _engine
    if _engine is None:
        _engine = sa.create_engine(f"postgresql+psycopg2://{USER}@{HOST}:{PORT}/{DBNAME}",
                                   isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    return _engine


meta = sa.MetaData()
items = sa.Table(
    P + "items", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(10, 2)),
    sa.Column("grp", sa.Text, nullable=False),
)


def ensure_schema(conn):
    """Create the table (checkfirst=False: has_table() needs pg_catalog) and a
    materialized view over it, once."""
    if getattr(ensure_schema, "done", False):
        return
    meta.create_all(conn, checkfirst=False)
    conn.execute(sa.text(f"CREATE MATERIALIZED VIEW {P}by_grp AS "
                         f"SELECT grp, count(*) AS n FROM {P}items GROUP BY grp"))
    ensure_schema.done = True


@check
def connect_and_initialize():
    with engine().connect() as conn:
        if EXPECT_VERSION_NUM:
            eq(conn.dialect.server_version_info[:2], (14, 13), "server_version_info from version()")
        eq(conn.dialect.default_schema_name, "public", "default_schema_name from current_schema()")
        eq(conn.execute(sa.text("SELECT 1")).scalar(), 1, "SELECT 1")


@check
def core_roundtrip():
    with engine().connect() as conn:
        ensure_schema(conn)
        conn.execute(items.insert(), [
            {"id": 1, "name": "one", "amount": Decimal("1.50"), "grp": "a"},
            {"id": 2, "name": "two", "amount": None, "grp": "a"},
            {"id": 3, "name": "three", "amount": Decimal("-3.25"), "grp": "b"},
        ])
        rows = conn.execute(sa.select(items.c.id, items.c.amount).where(items.c.grp == "a")
                            .order_by(items.c.id)).all()
        eq([tuple(r) for r in rows], [(1, Decimal("1.50")), (2, None)], "Core select with a bound parameter")
        conn.execute(items.update().where(items.c.id == 2).values(grp="b"))
        if refresh_sql(P + "by_grp"):
            conn.execute(sa.text(refresh_sql(P + "by_grp")))
        got = conn.execute(sa.text(f"SELECT grp, n FROM {P}by_grp ORDER BY grp")).all()
        eq([tuple(r) for r in got], [("a", 1), ("b", 2)], "materialized view after Core INSERT/UPDATE")


@check
def inspector_get_table_names():
    with engine().connect() as conn:
        ensure_schema(conn)
        names = [n for n in sa.inspect(conn).get_table_names() if n.startswith(P)]
        eq(names, [P + "items"], "get_table_names()")


@check
def inspector_get_columns():
    with engine().connect() as conn:
        ensure_schema(conn)
        cols = sa.inspect(conn).get_columns(P + "items")
        got = [(c["name"], str(c["type"]), c["nullable"]) for c in cols]
        eq(got, [("id", "INTEGER", False), ("name", "TEXT", False), ("amount", "NUMERIC(10, 2)", True),
                 ("grp", "TEXT", False)], "get_columns()")


@check
def inspector_get_pk_constraint():
    with engine().connect() as conn:
        ensure_schema(conn)
        pk = sa.inspect(conn).get_pk_constraint(P + "items")
        eq(pk["constrained_columns"], ["id"], "get_pk_constraint() columns")
        eq(pk["name"], P + "items_pkey", "get_pk_constraint() name")


@check
def inspector_get_view_names():
    with engine().connect() as conn:
        ensure_schema(conn)
        insp = sa.inspect(conn)
        eq([n for n in insp.get_view_names() if n.startswith(P)], [], "get_view_names() (no plain views)")
        eq([n for n in insp.get_materialized_view_names() if n.startswith(P)], [P + "by_grp"],
           "get_materialized_view_names()")


@check
def metadata_reflect():
    # MetaData.reflect() is what Alembic autogenerate and many admin tools do.
    with engine().connect() as conn:
        ensure_schema(conn)
        reflected = sa.MetaData()
        reflected.reflect(conn, only=[P + "items"])
        t = reflected.tables[P + "items"]
        eq([c.name for c in t.primary_key.columns], ["id"], "reflected primary key")
        if not isinstance(t.c.amount.type, sa.Numeric) or t.c.amount.type.scale != 2:
            raise CheckFailed(f"reflected amount type: {t.c.amount.type!r}")


if __name__ == "__main__":
    run("sqlalchemy")
