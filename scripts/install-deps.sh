#!/usr/bin/env bash
# Install what building and testing Weir needs on Debian/Ubuntu: system
# packages (apt) and, if cargo is missing, a Rust toolchain (rustup).
#
#   scripts/install-deps.sh          install only when something is missing
#   scripts/install-deps.sh --force  always run apt-get update + install (CI)
#
# Safe to run any number of times.
set -euo pipefail

PACKAGES=(
    build-essential
    pkg-config
    libclang-dev
    clang
    ccache
    ca-certificates
    openssl
    curl
    postgresql-client
    postgresql
)

force=0
if [[ "${1:-}" == "--force" ]]; then
    force=1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [[ $force -eq 1 || ${#missing[@]} -gt 0 ]]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: apt-get not found; install these packages yourself: ${missing[*]}" >&2
        exit 1
    fi
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            echo "install-deps: not root and no sudo; install these packages: ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "install-deps: installing system packages: ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${PACKAGES[@]}"
else
    echo "install-deps: system packages present"
fi

# Rust: rustup puts cargo in ~/.cargo/bin, which may not be on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
echo "install-deps: $("${HOME}/.cargo/bin/cargo" --version 2>/dev/null || cargo --version)"

# The real-client tests' drivers (Python venv, pgJDBC, psqlODBC).
"$(dirname "$0")/install-client-deps.sh" "$@"
