# RabbitMQ with MQTT over WebSocket plus the provisioner, for one small
# fly.io machine. Both stages use the same official image, an Ubuntu 24.04
# base, so the venv's interpreter path /usr/bin/python3 exists at run time.
ARG RABBITMQ_IMAGE=rabbitmq:4.2.8-management

FROM ${RABBITMQ_IMAGE} AS builder

# Ubuntu moves package versions within a release, so apt pins would break
# the build. The base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY provisioner/ provisioner/
RUN python3 -m venv /opt/provisioner \
    && /opt/provisioner/bin/pip install --no-cache-dir /src


FROM ${RABBITMQ_IMAGE}

# Only the interpreter and its standard library: no pip, no compilers.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=builder /opt/provisioner /opt/provisioner

# 90- sorts after the image's 10-defaults.conf, so these settings win.
COPY --chown=rabbitmq:rabbitmq deploy/rabbitmq.conf /etc/rabbitmq/conf.d/90-miyako.conf
# Replaces the image's plugin list, which also enables rabbitmq_prometheus.
COPY --chown=rabbitmq:rabbitmq deploy/enabled_plugins /etc/rabbitmq/enabled_plugins
COPY users.yaml /etc/provisioner/users.yaml
COPY entrypoint.sh /usr/local/bin/miyako-entrypoint.sh

# Erlang VM flags for one shared vCPU, read by rabbitmq-server's scripts
# (rabbitmq-env, 3.x and 4.x). +S 1:1 runs one scheduler thread. The
# +sbwt* flags turn off scheduler busy-waiting, which RabbitMQ's scripts
# already do by default since 3.9.0 and which are repeated here so that an
# override of the defaults keeps them. ERL_MAX_PORTS bounds the port table
# (sockets and files), 65536 by default, so 4096 keeps it small and still
# allows a few thousand MQTT connections.
ENV RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none" \
    ERL_MAX_PORTS="4096"

ENV PROVISIONER_USERS_FILE=/etc/provisioner/users.yaml \
    PROVISIONER_PYTHON=/opt/provisioner/bin/python \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# 15675: MQTT over WebSocket (path /ws), the port fly.io forwards to 443.
# 15672: management API, for local use only.
EXPOSE 15675 15672

ENTRYPOINT ["/usr/local/bin/miyako-entrypoint.sh"]
CMD ["rabbitmq-server"]
