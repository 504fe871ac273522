#!/usr/bin/env bash
# Install what the real-client tests (crates/weir/tests/clients/) need on
# Debian 12 / Ubuntu:
#   - apt: python3-venv, python3-pip, a JDK with javac (Java 17 on Debian 12),
#     the Debian pgJDBC jar (/usr/share/java/postgresql.jar), unixODBC and the
#     PostgreSQL ODBC driver (psqlodbcw.so, "PostgreSQL Unicode").
#   - a Python venv at $WEIR_PYENV (default $HOME/.cache/weir-pyenv) with
#     psycopg2, psycopg 3, asyncpg, SQLAlchemy and pyodbc (major versions pinned).
#
#   scripts/install-client-deps.sh          install only what is missing
#   scripts/install-client-deps.sh --force  always apt-get update + install, pip install
#
# Safe to run any number of times.
set -euo pipefail

APT_PACKAGES=(
    python3-venv
    python3-pip
    default-jdk-headless      # openjdk-17-jdk-headless on Debian 12: java + javac
    libpostgresql-jdbc-java   # /usr/share/java/postgresql.jar (pgJDBC 42.x)
    unixodbc                  # driver manager (libodbc.so.2, odbcinst)
    unixodbc-dev              # sql.h, needed if pip has to build pyodbc from source
    odbc-postgresql           # psqlodbc, registers "PostgreSQL Unicode" in odbcinst.ini
)

# Major versions pinned; minor/patch float so security fixes come in.
PIP_PACKAGES=(
    'psycopg2-binary>=2.9,<3'
    'psycopg[binary]>=3.1,<4'
    'asyncpg>=0.29,<1'
    'sqlalchemy>=2.0,<3'
    'pyodbc>=5,<6'
)

VENV="${WEIR_PYENV:-$HOME/.cache/weir-pyenv}"

force=0
if [[ "${1:-}" == "--force" ]]; then
    force=1
fi

# --- apt ---------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [[ $force -eq 1 || ${#missing[@]} -gt 0 ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-client-deps: apt-get not found; install these yourself: ${missing[*]}" >&2
        exit 1
    fi
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "install-client-deps: not root and no sudo; install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "install-client-deps: installing apt packages: ${missing[*]:-${APT_PACKAGES[*]}}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
else
    echo "install-client-deps: apt packages present"
fi

# --- Python venv ---------------------------------------------------------------
# Use Debian's python3 (the one python3-venv belongs to), not whatever python3
# is first on PATH (pyenv shims, etc.).
PY=/usr/bin/python3
[[ -x $PY ]] || PY="$(command -v python3)"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "install-client-deps: creating venv $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi

# Check each requirement against what the venv has; pip only when needed.
need_pip=$force
if [[ $need_pip -eq 0 ]]; then
    if ! "$VENV/bin/python" - "${PIP_PACKAGES[@]}" <<'EOF'
import sys
from importlib import metadata
# Minimal check: distribution installed and major version inside the pin.
import re
ok = True
for req in sys.argv[1:]:
    name = re.split(r"[\[<>=]", req)[0]
    lo = int(re.search(r">=(\d+)", req).group(1))
    hi = int(re.search(r"<(\d+)", req).group(1))
    try:
        major = int(metadata.version(name).split(".")[0])
    except metadata.PackageNotFoundError:
        ok = False
        continue
    if not (lo <= major < hi):
        ok = False
sys.exit(0 if ok else 1)
EOF
    then
        need_pip=1
    fi
fi

if [[ $need_pip -eq 1 ]]; then
    echo "install-client-deps: pip installing ${PIP_PACKAGES[*]}"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PIP_PACKAGES[@]}"
else
    echo "install-client-deps: python packages present in $VENV"
fi

# --- sanity --------------------------------------------------------------------
[[ -f /usr/share/java/postgresql.jar ]] || { echo "install-client-deps: /usr/share/java/postgresql.jar missing" >&2; exit 1; }
command -v javac >/dev/null || { echo "install-client-deps: javac missing" >&2; exit 1; }
odbcinst -q -d -n "PostgreSQL Unicode" >/dev/null || { echo "install-client-deps: ODBC driver 'PostgreSQL Unicode' not registered" >&2; exit 1; }
echo "install-client-deps: ok (venv: $VENV)"
