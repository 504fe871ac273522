"""Tiny shared harness for the real-client tests in this directory.

Each test_*.py script registers checks with @check (or @pending("why") for
one expected to fail today) and calls run().  A check is a function that
raises on failure; every check uses its own tables (names prefixed by the
client) and, usually, its own connection, so one failure does not cascade
into the next.  run() prints one PASS/FAIL line per check (XFAIL/XPASS for
pending ones) and a closing "N passed, N failed" line, and exits 1 if any
non-pending check failed.

The server address comes from WEIR_PORT (required) and WEIR_HOST (default
127.0.0.1).  Any user/database name is accepted by Weir; we use weir/weir.
"""

import datetime as _dt
import os
import sys
import traceback
from decimal import Decimal

HOST = os.environ.get("WEIR_HOST", "127.0.0.1")
try:
    PORT = int(os.environ["WEIR_PORT"])
except (KeyError, ValueError):
    sys.exit("WEIR_PORT must be set to the port of a running Weir server")
USER = os.environ.get("WEIR_USER", "weir")
DBNAME = os.environ.get("WEIR_DB", "weir")
# WEIR_REFERENCE_PG=1: the server is a real Postgres (to check the tests
# themselves).  Postgres does not maintain materialized views, so
# refresh_sql() gives a REFRESH to run before reading one; on Weir it is None.
REFERENCE_PG = os.environ.get("WEIR_REFERENCE_PG") == "1"
# The version Weir presents itself as (a reference Postgres is whatever it is).
EXPECT_VERSION_NUM = None if REFERENCE_PG else 140013


def refresh_sql(view):
    """SQL to run before reading a materialized view: None on Weir (views
    are maintained incrementally), REFRESH on a reference Postgres."""
    return f"REFRESH MATERIALIZED VIEW {view}" if REFERENCE_PG else None

UTC = _dt.timezone.utc

# The rows every client round-trips through the same table shape (see
# TYPES_DDL).  Row 2 has non-ASCII text, a quote, negative numbers, a
# timestamptz given in +02:00 (Weir returns UTC; aware datetimes compare by
# instant); row 3 is all NULLs except the key and the NOT NULL column; row 4
# has edge values (min bigint, empty string, 0.1, the largest NUMERIC(12,2),
# the Unix epoch, times before 1970 and before 2000, which the binary formats
# encode as negative offsets).
TYPES_COLUMNS = ["id", "big", "name", "score", "active", "price", "day", "at", "at_tz"]
TYPES_DDL = """CREATE TABLE {table} (
    id     INT PRIMARY KEY,
    big    BIGINT,
    name   TEXT NOT NULL,
    score  DOUBLE PRECISION,
    active BOOLEAN,
    price  NUMERIC(12, 2),
    day    DATE,
    at     TIMESTAMP,
    at_tz  TIMESTAMPTZ
)"""
TYPES_ROWS = [
    (1, 2**40 + 1, "alpha", 1.5, True, Decimal("12.34"),
     _dt.date(2024, 1, 2), _dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
     _dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)),
    (2, -5, "it's b\u00e9ta \u00fcn\u00efcode \u2603", -0.25, False, Decimal("-0.01"),
     _dt.date(1999, 12, 31), _dt.datetime(2000, 2, 29, 23, 59, 59),
     _dt.datetime(2020, 6, 1, 14, 0, 0, tzinfo=_dt.timezone(_dt.timedelta(hours=2)))),
    (3, None, "nulls", None, None, None, None, None, None),
    (4, -2**63, "", 0.1, True, Decimal("9999999999.99"),
     _dt.date(1970, 1, 1), _dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
     _dt.datetime(1900, 1, 1, tzinfo=UTC)),
]
# The Postgres type OIDs a client should see in RowDescription for TYPES_DDL.
TYPES_OIDS = {
    "id": 23, "big": 20, "name": 25, "score": 701, "active": 16, "price": 1700,
    "day": 1082, "at": 1114, "at_tz": 1184,
}

# BYTEA gets its own small table and checks (BYTEA_DDL / BYTEA_ROWS) so that a
# bytea problem is reported on its own and does not hide the other types.
BYTEA_DDL = "CREATE TABLE {table} (id INT PRIMARY KEY, b BYTEA)"
BYTEA_ROWS = [(1, b"\x00\x01\xff"), (2, b""), (3, bytes(range(256))), (4, None)]


class CheckFailed(AssertionError):
    pass


def _short(value, limit=100):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 20] + f"...<{len(text)} chars>"


def eq(actual, expected, what):
    """Assert actual == expected *and* that the Python types match (so 1 vs
    Decimal(1) or a naive vs aware datetime is caught)."""
    if actual != expected or type(actual) is not type(expected):
        raise CheckFailed(
            f"{what}: expected {_short(expected)} ({type(expected).__name__}), "
            f"got {_short(actual)} ({type(actual).__name__})")


def eq_rows(actual, expected, what):
    """Compare two lists of row tuples value by value (with eq's type check),
    reporting every mismatching value, not just the first."""
    actual = [tuple(r) for r in actual]
    if len(actual) != len(expected):
        raise CheckFailed(f"{what}: expected {len(expected)} rows {_short(expected, 300)}, "
                          f"got {len(actual)} rows {_short(actual, 300)}")
    problems = []
    for i, (a, e) in enumerate(zip(actual, expected)):
        if len(a) != len(e):
            problems.append(f"row {i}: expected {_short(e)}, got {_short(a)}")
            continue
        for j, (av, ev) in enumerate(zip(a, e)):
            try:
                eq(av, ev, f"row {i} col {j}")
            except CheckFailed as exc:
                problems.append(str(exc))
    if problems:
        raise CheckFailed(f"{what}: " + "; ".join(problems))


def expect_sqlstate(fn, sqlstate, get_state, what):
    """Run fn(); it must raise an exception whose SQLSTATE (read with
    get_state(exc)) is sqlstate."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any driver error type
        got = get_state(exc)
        if got != sqlstate:
            raise CheckFailed(f"{what}: expected SQLSTATE {sqlstate}, got {got!r}: {exc!r}") from exc
        return exc
    raise CheckFailed(f"{what}: expected an error with SQLSTATE {sqlstate}, but it succeeded")


_checks = []  # (function, pending reason or None)


def check(fn):
    """Decorator: register fn as a check, run in definition order."""
    _checks.append((fn, None))
    return fn


def pending(reason):
    """Decorator: a check expected to fail today (e.g. it needs pg_catalog).
    It still runs: XFAIL if it fails, XPASS if it passes (then make it a
    @check).  Pending checks never change the exit status unless
    WEIR_STRICT=1."""
    def register(fn):
        _checks.append((fn, reason))
        return fn
    return register


def run(client):
    """Run every registered check; print PASS/FAIL (XFAIL/XPASS for pending
    ones) lines and a closing count line; exit 1 if any check failed.

    WEIR_CHECKS=name1,name2 runs only those checks (handy when debugging);
    WEIR_TRACEBACK=1 prints tracebacks of failures."""
    only = set(filter(None, os.environ.get("WEIR_CHECKS", "").split(",")))
    strict = os.environ.get("WEIR_STRICT") == "1"
    passed = failed = xfailed = xpassed = 0
    for fn, reason in _checks:
        if only and fn.__name__ not in only:
            continue
        name = f"{client}.{fn.__name__}"
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {exc}".strip().replace("\n", " | ")
            if reason is None or strict:
                failed += 1
                print(f"FAIL {name}: {msg}", flush=True)
            else:
                xfailed += 1
                print(f"XFAIL {name} ({reason}): {msg}", flush=True)
            if os.environ.get("WEIR_TRACEBACK"):
                traceback.print_exc()
        else:
            if reason is None:
                passed += 1
                print(f"PASS {name}", flush=True)
            else:
                xpassed += 1
                print(f"XPASS {name}: pending check passes now ({reason}); make it a @check", flush=True)
    if passed + failed + xfailed + xpassed == 0:
        print(f"{client}: no check ran", flush=True)
        sys.exit(1)
    if xfailed or xpassed:
        print(f"{client}: pending checks: {xfailed} expected failures, {xpassed} unexpected passes", flush=True)
    print(f"{client}: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
