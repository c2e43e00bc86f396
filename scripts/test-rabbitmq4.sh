#!/usr/bin/env bash
# Run the broker tests against RabbitMQ 4.0 from a Debian 13 chroot.
#
# Usage: scripts/test-rabbitmq4.sh [--root DIR] [PYTEST_ARGS...]
#   --root DIR   chroot to use, built there first when missing
#                (default: $PROVISIONER_TEST_RABBITMQ_ROOT, else .rabbitmq4/
#                at the repository root)
#   PYTEST_ARGS  passed to pytest after "-m broker", for example a test file
#
# Run as root: building the chroot needs debootstrap, and every test node
# runs through chroot(8) with /proc mounted inside. PYTHON selects the
# interpreter (default: the repository's .venv, else python3). Prints how
# long the build and the test run took.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${PROVISIONER_TEST_RABBITMQ_ROOT:-$repo/.rabbitmq4}

if [[ ${1:-} == "--root" ]]; then
    if [[ $# -lt 2 ]]; then
        echo "error: --root needs a directory" >&2
        exit 2
    fi
    root=$2
    shift 2
fi

if [[ -n ${PYTHON:-} ]]; then
    python=$PYTHON
elif [[ -x $repo/.venv/bin/python ]]; then
    python=$repo/.venv/bin/python
else
    python=python3
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "error: run as root, because the chroot and its nodes need it" >&2
    exit 1
fi

build_start=$SECONDS
"$repo/scripts/rabbitmq4-chroot.sh" "$root"
build_seconds=$((SECONDS - build_start))
root=$(cd "$root" && pwd)

test_start=$SECONDS
status=0
(
    cd "$repo"
    PROVISIONER_TEST_RABBITMQ_ROOT=$root "$python" -m pytest -m broker "$@"
) || status=$?
test_seconds=$((SECONDS - test_start))

echo "RabbitMQ $(cat "$root/.rabbitmq4-ready") in $root"
echo "chroot build or check: ${build_seconds} s; broker tests: ${test_seconds} s (exit ${status})"
exit "$status"
