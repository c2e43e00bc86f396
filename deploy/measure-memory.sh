#!/bin/sh
# Measure the idle RSS of a private RabbitMQ node that runs with
# deploy/rabbitmq.conf and the Erlang VM flags from the Dockerfile.
#
# Usage: deploy/measure-memory.sh [CHROOT_DIR]
#
# Without CHROOT_DIR it runs /usr/lib/rabbitmq/bin/rabbitmq-server from the
# host (Debian's package). With CHROOT_DIR it runs the same path inside that
# root, for a newer RabbitMQ installed in a Debian chroot. Run it as root.
#
# The node gets free loopback ports and its own epmd port, so it never
# meets a broker that already runs on the standard ports. It prints one
# line per sample: "sample N after S s: RSS_KIB KiB".
#
# Environment:
#   MEMTEST_IDLE_SECONDS   wait before the first sample (default 60)
#   MEMTEST_SAMPLES        number of samples, 10 s apart (default 3)
#   MEMTEST_COMPAT_3X=1    drop keys that RabbitMQ 3.x rejects
#   MEMTEST_BASELINE=1     measure RabbitMQ's defaults instead: only the
#                          port settings, no VM flags, ERL_MAX_PORTS unset
set -eu

root_dir=${1:-}
idle_seconds=${MEMTEST_IDLE_SECONDS:-60}
sample_count=${MEMTEST_SAMPLES:-3}
deploy_dir=$(cd "$(dirname "$0")" && pwd)
server=/usr/lib/rabbitmq/bin/rabbitmq-server

# Read the VM flags from the Dockerfile so the measurement cannot drift
# from what the image runs.
dockerfile_value() {
    sed -n "s/^\(ENV \)\{0,1\} *$1=\"\([^\"]*\)\".*/\2/p" "$deploy_dir/../Dockerfile" | head -n 1
}
if [ "${MEMTEST_BASELINE:-0}" = 1 ]; then
    erl_args=
    max_ports=
else
    erl_args=$(dockerfile_value RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS)
    max_ports=$(dockerfile_value ERL_MAX_PORTS)
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The node opens work_inner (a path inside the chroot), this script work_outer.
work_inner=/tmp/memtest.$$
work_outer=$root_dir$work_inner
mkdir -p "$work_outer/mnesia" "$work_outer/log" "$work_outer/home"

node_port=$(free_port)
dist_port=$(free_port)
epmd_port=$(free_port)
management_port=$(free_port)
mqtt_port=$(free_port)
web_mqtt_port=$(free_port)

# The measured config, bound to loopback and moved to free ports.
sed -e "s/^management.tcp.port = .*/management.tcp.port = $management_port/" \
    -e "s/^web_mqtt.tcp.port = .*/web_mqtt.tcp.port = $web_mqtt_port/" \
    "$deploy_dir/rabbitmq.conf" > "$work_outer/rabbitmq.conf"
if [ "${MEMTEST_BASELINE:-0}" = 1 ]; then
    grep -E '^(management|web_mqtt)\.tcp\.port' "$work_outer/rabbitmq.conf" > "$work_outer/ports.conf"
    mv "$work_outer/ports.conf" "$work_outer/rabbitmq.conf"
fi
if [ "${MEMTEST_COMPAT_3X:-0}" = 1 ]; then
    sed -i -e '/^anonymous_login_user/d' "$work_outer/rabbitmq.conf"
fi
cat >> "$work_outer/rabbitmq.conf" <<EOF
management.tcp.ip = 127.0.0.1
web_mqtt.tcp.ip = 127.0.0.1
mqtt.listeners.tcp.default = 127.0.0.1:$mqtt_port
EOF
cp "$deploy_dir/enabled_plugins" "$work_outer/enabled_plugins"
: > "$work_outer/rabbitmq-env.conf"

proc_mounted=no
if [ -n "$root_dir" ] && [ ! -e "$root_dir/proc/self" ]; then
    mount -t proc proc "$root_dir/proc"
    proc_mounted=yes
fi

set -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME="$work_inner/home" \
    RUNNING_UNDER_SYSTEMD=true \
    RABBITMQ_NODENAME=memtest@localhost \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$node_port" \
    RABBITMQ_DIST_PORT="$dist_port" \
    ERL_EPMD_PORT="$epmd_port" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_FLAGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    RABBITMQ_MNESIA_BASE="$work_inner/mnesia" \
    RABBITMQ_LOG_BASE="$work_inner/log" \
    RABBITMQ_CONFIG_FILE="$work_inner/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$work_inner/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$work_inner/enabled_plugins" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$erl_args" \
    ERL_MAX_PORTS="$max_ports" \
    "$server"
if [ -n "$root_dir" ]; then
    set -- chroot "$root_dir" "$@"
fi

# RUNNING_UNDER_SYSTEMD makes rabbitmq-server exec the VM, and chroot and
# env exec too, so this PID ends up being beam.smp itself.
"$@" > "$work_outer/console.log" 2>&1 &
broker_pid=$!

stop_node() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    # The node started its own epmd on the private port: stop that one only.
    # Its PID is read from the listening socket on that port.
    epmd_pids=$(ss -Hltnp "sport = :$epmd_port" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | sort -u)
    for epmd_pid in $epmd_pids; do
        kill -TERM "$epmd_pid" || true
    done
    # NOTE: another user of the same chroot may have unmounted /proc in the
    # meantime, or may still need it: the mount is not reference-counted.
    if [ "$proc_mounted" = yes ]; then
        umount "$root_dir/proc" || true
    fi
    rm -rf "$work_outer"
}
trap stop_node EXIT INT TERM

echo "node pid $broker_pid, management on 127.0.0.1:$management_port"
echo "erl args: $erl_args, ERL_MAX_PORTS=$max_ports"
sleep "$idle_seconds"
echo "process: $(cat "/proc/$broker_pid/comm")"
sample=1
elapsed=$idle_seconds
while [ "$sample" -le "$sample_count" ]; do
    rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status")
    echo "sample $sample after $elapsed s: $rss_kib KiB"
    sample=$((sample + 1))
    if [ "$sample" -le "$sample_count" ]; then
        sleep 10
        elapsed=$((elapsed + 10))
    fi
done
curl -s -o /dev/null -w 'management API: HTTP %{http_code}\n' \
    "http://127.0.0.1:$management_port/api/overview" || true
