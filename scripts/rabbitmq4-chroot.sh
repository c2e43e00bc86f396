#!/bin/sh
# Build a Debian 13 (trixie) chroot holding RabbitMQ 4.0, so the test suite
# can run against a newer broker than the host's Debian 12 package (3.10).
#
# Usage: scripts/rabbitmq4-chroot.sh [DIR]
#   DIR defaults to .rabbitmq4/ at the repository root.
# Run as root. A second run with a finished DIR does nothing.
# Point the tests at the result with PROVISIONER_TEST_RABBITMQ_ROOT=DIR.
set -eu

script_dir=$(cd "$(dirname "$0")" && pwd)
root=${1:-"$script_dir/../.rabbitmq4"}
ready_marker=.rabbitmq4-ready
suite=trixie

if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root, because debootstrap and chroot need it" >&2
    exit 1
fi

if [ -f "$root/$ready_marker" ]; then
    echo "RabbitMQ chroot already built in $root"
    exit 0
fi

# Print the first Debian mirror named in the host's apt sources, in either
# the one-line format or the deb822 format, skipping the security archive.
find_mirror() {
    for source in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources; do
        [ -f "$source" ] || continue
        sed -n \
            -e 's/^[[:space:]]*deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
            -e 's/^[[:space:]]*URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
            "$source"
    done | grep '/debian/\{0,1\}$' | grep -v security | head -n 1
}

mirror=$(find_mirror || true)
mirror=${mirror:-http://deb.debian.org/debian}

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends debootstrap
fi

mkdir -p "$root"
root=$(cd "$root" && pwd)

unmount_proc() {
    if mountpoint -q "$root/proc"; then
        umount "$root/proc"
    fi
}
trap unmount_proc EXIT INT TERM

echo "Building $suite chroot in $root from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror"

cp /etc/resolv.conf "$root/etc/resolv.conf"

# Keep package scripts from starting a broker inside the chroot: the tests
# start their own private nodes.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mount -t proc proc "$root/proc"
chroot "$root" apt-get update
DEBIAN_FRONTEND=noninteractive chroot "$root" \
    apt-get install -y --no-install-recommends rabbitmq-server
chroot "$root" apt-get clean
unmount_proc

# shellcheck disable=SC2016 # dpkg-query expands ${Version}, not the shell
version=$(chroot "$root" dpkg-query -W -f '${Version}' rabbitmq-server)
echo "$version" >"$root/$ready_marker"
echo "RabbitMQ $version installed in $root"
