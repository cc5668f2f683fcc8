# The images of deploy/docker/Dockerfile, built without pulling anything:
# from a locally made Debian base and binaries built on the host.
# deploy/build-images.sh prepares the context and runs this file.

ARG BASE=flotilla/base:bookworm
# (Stages in build order: the classic builder builds every stage before the
# target. So the Python actor comes first: it builds from a context with
# wheels/ alone, no Rust binaries; every later target needs wheels/ too.)

# The Python actor (`flotilla-actor`, Gymnasium) in a venv, installed from the
# wheels build-images.sh downloads on the host (wheels/: ./python and its
# dependencies), so the build reaches no package index. (One stage: a build
# stage would be left behind as an untagged image by the classic builder.)
FROM ${BASE} AS actor-python
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin flotilla \
 && mkdir -p /app \
 && find / -xdev -perm /6000 -type f -exec chmod ug-s {} +
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/flotilla-actor \
 && /opt/flotilla-actor/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels flotilla \
 && rm -rf /tmp/wheels \
 && /opt/flotilla-actor/bin/flotilla-actor --version
# Your environment's module goes in /app (the working directory, where
# `--make module:callable` looks first).
WORKDIR /app
USER 10001
ENV VIRTUAL_ENV=/opt/flotilla-actor \
    PATH=/opt/flotilla-actor/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOTILLA_LEARNER=http://learner:50051 \
    FLOTILLA_METRICS_LISTEN=0.0.0.0:9100
EXPOSE 9100
ENTRYPOINT ["/opt/flotilla-actor/bin/flotilla-actor"]

# Prometheus from Debian's packages, for hosts that cannot pull prom/prometheus.
FROM ${BASE} AS prometheus
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# The images hold no set-user-ID or set-group-ID programs (the `find ... chmod
# ug-s` below): Swarm services cannot set no-new-privileges, and with no such
# program there is nothing for it to stop.
FROM ${BASE} AS actor
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin flotilla \
 && find / -xdev -perm /6000 -type f -exec chmod ug-s {} +
COPY actor /usr/local/bin/actor
USER 10001
ENV FLOTILLA_LEARNER=http://learner:50051 \
    FLOTILLA_METRICS_LISTEN=0.0.0.0:9100
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/actor"]

FROM ${BASE} AS learner
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin flotilla \
 && mkdir -p /runs && chown 10001:10001 /runs \
 && find / -xdev -perm /6000 -type f -exec chmod ug-s {} +
COPY learner /usr/local/bin/learner
COPY lib/ /opt/flotilla/lib/
COPY configs/ /etc/flotilla/configs/
USER 10001
ENV LD_LIBRARY_PATH=/opt/flotilla/lib \
    FLOTILLA_CONFIG=/etc/flotilla/configs/cartpole.toml \
    FLOTILLA_RUN_DIR=/runs/flotilla \
    FLOTILLA_RESUME=true \
    FLOTILLA_LISTEN=0.0.0.0:50051 \
    FLOTILLA_METRICS_LISTEN=0.0.0.0:9000
VOLUME /runs
EXPOSE 50051 9000
ENTRYPOINT ["/usr/local/bin/learner"]
