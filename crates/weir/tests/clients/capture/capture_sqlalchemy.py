#!/usr/bin/env python3
"""Records the SQL SQLAlchemy's PostgreSQL dialects send on connect and for
the inspector methods, for capture/sqlalchemy-*.txt.

Run against a real Postgres behind ../wirelog.py; markers written into the
same log file separate the calls.  SQLAlchemy picks some catalog queries by
server version (parsed from `select pg_catalog.version()`), so the version is
forced to 14.13 (what Weir reports) after the query is sent:

    ../wirelog.py 55434 <pg port> --log sqlalchemy-psycopg2.txt &
    capture_sqlalchemy.py sqlalchemy-psycopg2.txt postgresql+psycopg2://weir@127.0.0.1:55434/weir

Not a test: it asserts nothing and needs a real Postgres.
"""
import sys

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.pool import NullPool


def as_14(self, connection):
    connection.exec_driver_sql("select pg_catalog.version()").scalar()  # sent as usual
    return (14, 13)


PGDialect._get_server_version_info = as_14
LOG, URL = sys.argv[1], sys.argv[2]


def mark(m):
    with open(LOG, "a") as f:
        f.write(f"===== {m}\n")


mark(f"connect + dialect initialize ({URL.split(':')[0]}, SQLAlchemy {sa.__version__})")
eng = sa.create_engine(URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
with eng.connect() as c:
    mark("setup (not part of capture)")
    c.execute(sa.text("DROP MATERIALIZED VIEW IF EXISTS sa_by_grp"))
    c.execute(sa.text("DROP TABLE IF EXISTS sa_items"))
    c.execute(sa.text("CREATE TABLE sa_items (id int primary key, name text not null, "
                      "amount numeric(10,2), grp text not null)"))
    c.execute(sa.text("CREATE MATERIALIZED VIEW sa_by_grp AS SELECT grp, count(*) AS n FROM sa_items GROUP BY grp"))
    for m, f in [("get_table_names()", lambda i: i.get_table_names()),
                 ("get_columns('sa_items')", lambda i: i.get_columns("sa_items")),
                 ("get_view_names()", lambda i: i.get_view_names()),
                 ("get_materialized_view_names()", lambda i: i.get_materialized_view_names()),
                 ("get_pk_constraint('sa_items')", lambda i: i.get_pk_constraint("sa_items")),
                 ("has_table('sa_items')", lambda i: i.has_table("sa_items"))]:
        insp = sa.inspect(c)  # a fresh inspector per call: no cached results
        mark(m)
        print(m, f(insp))
    mark("end")
