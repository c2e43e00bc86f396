#!/bin/sh
# Start the provisioner next to the broker, then replace this shell with
# the broker.
#
# The provisioner runs as a background child: `python -m provisioner serve`
# waits for the management API, syncs users.yaml and then exits or keeps
# reconciling. The broker command is started with `exec`, so the broker
# takes over this shell's PID (PID 1 in a container without an init), and
# the platform's stop signal goes to the broker, not to a wrapper.
# The official image's docker-entrypoint.sh, gosu, rabbitmq-server and erl
# all exec in turn (the image sets RUNNING_UNDER_SYSTEMD=true for that), so
# beam.smp ends up with this PID.
#
# Environment read here:
#   PROVISIONER_PYTHON             interpreter with the provisioner installed
#                                  (default /opt/provisioner/bin/python)
#   PROVISIONER_BROKER_ENTRYPOINT  program that starts the broker command
#                                  (default docker-entrypoint.sh, the image's
#                                  own; set it empty to exec the command
#                                  directly)
#   PROVISIONER_ON_FAILURE         keep (default) or stop, see below
#   PROVISIONER_RUN_AS             user for the provisioner when this script
#                                  runs as root and gosu exists (default
#                                  rabbitmq; empty keeps the current user)
# Environment set for the provisioner:
#   PROVISIONER_BROKER_PID         PID that the broker will have; serve
#                                  stops once that process is gone
#
# PROVISIONER_ON_FAILURE decides what a failed provisioner run does:
#   keep  log an error and leave the broker running with the accounts it
#         already has. A broken users.yaml then does not take MQTT down.
#   stop  send SIGTERM to the broker, so the container stops and the
#         platform restarts it. The broker then exits with status 0, so
#         the restart policy must be "always" (fly.toml) or
#         "unless-stopped" (docker-compose.yml), not "on-failure".
#         The shell wrapper below sends the signal, not the
#         provisioner, so the Python code needs no signal logic. The target
#         is $$: a subshell keeps its parent's $$, and after exec that PID
#         belongs to the broker. The broker runs as PID 1 in Docker, and
#         the kernel drops signals to PID 1 that it has no handler for.
#         RabbitMQ handles SIGTERM as a clean shutdown (checked with
#         3.10.8, which logs "SIGTERM received - shutting down").
# If the provisioner fails before the exec below has run, the first signal
# reaches this shell instead, and as PID 1 it would ignore it. The wrapper
# repeats the signal every 10 s until the broker is gone (stop_broker), so
# such a signal, or one the booting Erlang VM drops, only delays the stop.
#
# Only a broker command (rabbitmq-server) starts the provisioner, so
# `docker run IMAGE bash` gets a plain shell.
set -eu

log() {
    printf 'miyako-entrypoint: %s\n' "$*" >&2
}

python_bin=${PROVISIONER_PYTHON:-/opt/provisioner/bin/python}
broker_entrypoint=${PROVISIONER_BROKER_ENTRYPOINT-docker-entrypoint.sh}
on_failure=${PROVISIONER_ON_FAILURE:-keep}
run_as=${PROVISIONER_RUN_AS-rabbitmq}

case "$on_failure" in
    keep | stop) ;;
    *)
        log "invalid PROVISIONER_ON_FAILURE '$on_failure': expected keep or stop"
        exit 64
        ;;
esac

if [ "$#" -eq 0 ]; then
    log "missing command: expected rabbitmq-server or another program to run"
    exit 64
fi

run_provisioner() {
    if [ -n "$run_as" ] && [ "$(id -u)" = 0 ] && command -v gosu > /dev/null 2>&1 \
        && id "$run_as" > /dev/null 2>&1; then
        # The provisioner needs no privileges, so it does not keep root.
        gosu "$run_as" "$python_bin" -m provisioner serve
    else
        "$python_bin" -m provisioner serve
    fi
}

# The Erlang VM can drop a SIGTERM that arrives early in its boot: with
# RabbitMQ 3.10.8 about one run in three kept booting when an invalid
# users.yaml made the provisioner fail about 1 s after the start. So the
# signal is sent again every STOP_RETRY_SECONDS until the broker is gone.
STOP_RETRY_SECONDS=10

# A broker that exited but is not reaped yet (a zombie) accepts kill -0,
# so /proc decides where it exists.
broker_running() {
    if [ -r "/proc/$1/status" ]; then
        if grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; then
            return 1
        fi
        return 0
    else
        kill -0 "$1" 2> /dev/null
    fi
}

stop_broker() {
    kill -TERM "$1" 2> /dev/null || return 0
    waited=0
    while sleep 1 && broker_running "$1"; do
        waited=$((waited + 1))
        if [ $((waited % STOP_RETRY_SECONDS)) -eq 0 ]; then
            log "the broker (PID $1) is still running; sending SIGTERM again"
            kill -TERM "$1" 2> /dev/null || return 0
        fi
    done
}

supervise_provisioner() {
    broker_pid=$1
    status=0
    run_provisioner || status=$?
    if [ "$status" -eq 0 ]; then
        log "provisioner serve finished"
        return 0
    fi
    if [ "$on_failure" = stop ]; then
        log "ERROR: provisioner serve failed with exit status $status;" \
            "stopping the broker (PID $broker_pid) so the platform restarts" \
            "the container (PROVISIONER_ON_FAILURE=stop)"
        stop_broker "$broker_pid"
        return 0
    fi
    log "ERROR: provisioner serve failed with exit status $status;" \
        "the broker keeps running, and accounts from users.yaml may be" \
        "missing or out of date (PROVISIONER_ON_FAILURE=keep)"
}

case "$(basename "$1")" in
    rabbitmq-server)
        PROVISIONER_BROKER_PID=$$
        export PROVISIONER_BROKER_PID
        # After the exec the broker is this subshell's parent. The Erlang VM
        # reaps it when it exits (no zombie was left with 3.10.8).
        supervise_provisioner "$$" &
        ;;
    *) ;;
esac

if [ -n "$broker_entrypoint" ]; then
    exec "$broker_entrypoint" "$@"
fi
exec "$@"
