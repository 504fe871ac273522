#!/usr/bin/env bash
# Run the real-client tests against a Weir binary: one fresh server (own port,
# own data directory) per client, then PASS/FAIL per client.
#
#   crates/weir/tests/clients/run.sh WEIR_BINARY [CLIENT ...]
#
# CLIENT is any of: psycopg2 psycopg3 asyncpg odbc jdbc sqlalchemy (default:
# all).  Dependencies: scripts/install-client-deps.sh.  Environment:
#   WEIR_PYENV    venv with the Python drivers (default $HOME/.cache/weir-pyenv)
#   JDBC_JAR      pgJDBC jar (default /usr/share/java/postgresql.jar)
#   CLIENT_TIMEOUT  seconds per client script (default 300)
#   WEIR_STRICT=1 count failing @pending checks as failures
#   KEEP_LOGS=1   keep the per-client output and server logs (path printed)
#
# Exit status: 0 if every client passed (pending checks never fail a client
# unless WEIR_STRICT=1), 1 otherwise, 2 on a usage or setup error.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
ALL_CLIENTS=(psycopg2 psycopg3 asyncpg odbc jdbc sqlalchemy)

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
weir="$(realpath "$1")"
shift
[[ -x "$weir" ]] || { echo "run.sh: $weir is not an executable" >&2; exit 2; }
clients=("$@")
[[ ${#clients[@]} -gt 0 ]] || clients=("${ALL_CLIENTS[@]}")

pyenv="${WEIR_PYENV:-$HOME/.cache/weir-pyenv}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree
python="$pyenv/bin/python"
jar="${JDBC_JAR:-/usr/share/java/postgresql.jar}"
timeout_s="${CLIENT_TIMEOUT:-300}"

work="$(mktemp -d -t weir-clients.XXXXXX)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    if [[ "${KEEP_LOGS:-}" == 1 ]]; then
        echo "run.sh: logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start a Weir server on a free port with a fresh data directory; sets
# $port and $server_pid.  Returns non-zero if it does not accept connections
# within 30 s.
start_server() {
    local name="$1" data
    data="$work/data-$name"
    mkdir -p "$data"
    port="$(free_port)"
    "$weir" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$work/server-$name.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            server_pid=""
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        server_pid=""
    fi
}

# The command that runs one client's checks (WEIR_PORT is set by the caller).
client_cmd() {
    case "$1" in
        psycopg2|psycopg3|asyncpg|odbc|sqlalchemy)
            echo "$python" "$here/test_$1.py" ;;
        jdbc)
            echo java -cp "$work/jdbc:$jar" JdbcTest ;;
        *)
            return 1 ;;
    esac
}

# Setup checks: fail early with a clear message instead of per-client noise.
if [[ ! -x "$python" ]]; then
    echo "run.sh: no Python venv at $pyenv; run scripts/install-client-deps.sh" >&2
    exit 2
fi
for c in "${clients[@]}"; do
    client_cmd "$c" >/dev/null || { echo "run.sh: unknown client '$c' (know: ${ALL_CLIENTS[*]})" >&2; exit 2; }
done
jdbc_build_error=""
if [[ " ${clients[*]} " == *" jdbc "* ]]; then
    mkdir -p "$work/jdbc"
    if ! command -v javac >/dev/null || [[ ! -f "$jar" ]]; then
        jdbc_build_error="javac or $jar missing; run scripts/install-client-deps.sh"
    elif ! javac -cp "$jar" -d "$work/jdbc" "$here/JdbcTest.java" >"$work/javac.log" 2>&1; then
        jdbc_build_error="javac failed: $(tr '\n' ' ' <"$work/javac.log")"
    fi
fi

declare -A status
passed=0
failed=0
for c in "${clients[@]}"; do
    echo "=== $c"
    if [[ "$c" == jdbc && -n "$jdbc_build_error" ]]; then
        echo "$jdbc_build_error"
        status[$c]="FAIL ($jdbc_build_error)"
        failed=$((failed + 1))
        continue
    fi
    if ! start_server "$c"; then
        echo "Weir did not start; its log:"
        tail -20 "$work/server-$c.log"
        status[$c]="FAIL (server did not start)"
        failed=$((failed + 1))
        stop_server
        continue
    fi
    # shellcheck disable=SC2046  # client_cmd prints a word list
    (cd "$here" && WEIR_PORT="$port" timeout "$timeout_s" $(client_cmd "$c")) 2>&1 | tee "$work/$c.out"
    rc=${PIPESTATUS[0]}
    stop_server
    # The client's closing "N passed, N failed" line and pending summary.
    summary="$(grep -E "^$c: [0-9]+ passed, [0-9]+ failed" "$work/$c.out" | tail -1 | sed "s/^$c: //")"
    pend="$(grep -E "^$c: pending checks:" "$work/$c.out" | tail -1 | sed "s/^$c: pending checks: //")"
    detail="${summary:-no summary line}${pend:+; pending: $pend}"
    if [[ $rc -eq 0 ]]; then
        status[$c]="PASS ($detail)"
        passed=$((passed + 1))
    else
        [[ $rc -eq 124 ]] && detail="timed out after ${timeout_s}s; $detail"
        status[$c]="FAIL (exit $rc; $detail)"
        failed=$((failed + 1))
    fi
done

echo
echo "=== summary (weir: $weir)"
for c in "${clients[@]}"; do
    printf '%-5s %s %s\n' "${status[$c]%% *}" "$c" "${status[$c]#* }"
done
echo "clients: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
