#!/usr/bin/env bash
# Install the Debian packages the tests run for real: redis-server, coturn (turnserver) and
# chromium. Does nothing, quickly, when all three are present. Installs with apt-get as root,
# or through sudo when sudo needs no password; otherwise it only says what is missing (the
# tests that need a missing program then skip on your machine, and fail in CI).
set -euo pipefail

# Debian package -> the program the tests run.
packages=(redis-server coturn chromium)
programs=(redis-server turnserver chromium)

missing=()
for i in "${!packages[@]}"; do
    if ! command -v "${programs[$i]}" >/dev/null 2>&1; then
        missing+=("${packages[$i]}")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        sudo=(none)
    fi
fi
if [ "${sudo[*]}" = none ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing ${missing[*]}; install them with:" >&2
    echo "    sudo apt-get install ${missing[*]}" >&2
    if [ "${CI:-}" = true ]; then
        exit 1
    fi
    exit 0
fi

apt_get() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"
}
echo "install-system-deps: installing ${missing[*]} with apt-get"
for attempt in 1 2 3; do
    if apt_get update -qq && apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        break
    fi
    if [ "$attempt" -eq 3 ]; then
        echo "install-system-deps: apt-get failed three times" >&2
        exit 1
    fi
    sleep 5
done
for i in "${!packages[@]}"; do
    if ! command -v "${programs[$i]}" >/dev/null 2>&1; then
        echo "install-system-deps: ${packages[$i]} installed but ${programs[$i]} not found" >&2
        exit 1
    fi
done
