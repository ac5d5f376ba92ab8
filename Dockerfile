# syntax=docker/dockerfile:1
# The txn-correlator image: the official Flink image (Java 17) plus Python 3.11, PyFlink, the
# project and its Kafka connector. One image serves every role: JobManager, TaskManager, the
# `flink run` client, the generator (docker-compose.yml) and the Flink Kubernetes Operator's
# pods (deploy/kubernetes/). tests/test_deployment.py keeps the pins below equal to the ones in
# pyproject.toml and stack/jars.py, and the paths equal to those in the deployment files.
#
#   docker build -t txn-correlator:0.1.0 .

ARG FLINK_VERSION=2.2.1
ARG PYTHON_VERSION=3.11.15
ARG FLINK_KAFKA_CONNECTOR=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2

# --- The Kafka connector from Maven Central, as stack/jars.py fetches it --------------------
FROM maven:3.9-eclipse-temurin-17 AS jars
ARG FLINK_KAFKA_CONNECTOR
ARG FLINK_KAFKA_CONNECTOR_SHA256=5605c691d11a501382c383fecba37a7a552467da5ab7ba904ef5d6f3d62c5616
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /jars
RUN mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="${FLINK_KAFKA_CONNECTOR}" -DoutputDirectory=/jars \
 && printf '%s  %s\n' "${FLINK_KAFKA_CONNECTOR_SHA256}" *.jar | sha256sum -c -
# --- Python 3.11, built from python.org's source ------------------------------------------
# The Flink image is Ubuntu 24.04, whose only Python is 3.12; PyFlink 2.2 and this project
# pin 3.11. Built with --enable-shared: thread mode embeds the interpreter (pemja) in the
# TaskManager JVM and needs libpython3.11.so.
FROM flink:${FLINK_VERSION}-java17 AS python
ARG PYTHON_VERSION
ARG PYTHON_SHA256=f4de1b10bd6c70cbb9fa1cd71fc5038b832747a74ee59d599c69ce4846defb50
# A build stage only: nothing runs from it, the image below ends as the flink user.
# hadolint ignore=DL3002
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential libbz2-dev libffi-dev liblzma-dev libncurses-dev libreadline-dev \
      libsqlite3-dev libssl-dev uuid-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/python
RUN wget -nv -O python.tgz \
      "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tgz" \
 && echo "${PYTHON_SHA256}  python.tgz" | sha256sum -c - \
 && tar -xzf python.tgz --strip-components=1 \
 && ./configure --prefix=/opt/python --enable-shared --with-ensurepip=install \
      LDFLAGS="-Wl,-rpath,/opt/python/lib" \
 && make -j"$(nproc)" \
 && make install \
 && ln -s python3 /opt/python/bin/python \
 && /opt/python/bin/python -c "import ctypes, ssl, sqlite3, lzma, bz2, zlib"

# --- The image -----------------------------------------------------------------------------
FROM flink:${FLINK_VERSION}-java17
ARG FLINK_VERSION
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Run-time libraries of the Python built above (its -dev packages stay in the build stage).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libbz2-1.0 libffi8 liblzma5 libncursesw6 libreadline8t64 libsqlite3-0 libssl3t64 \
      libuuid1 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python /opt/python /opt/python
ENV PATH="/opt/python/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# PyFlink first: the largest layer, rebuilt only when the Flink version changes.
RUN python -m pip install --no-cache-dir "apache-flink==${FLINK_VERSION}"

# Thread-mode Python jobs need flink-python on the cluster class path (lib/). A link stays in
# opt/, where `flink run -py` and the Kubernetes operator's PythonDriver jarURI look for it.
RUN mv "${FLINK_HOME}/opt/flink-python-${FLINK_VERSION}.jar" "${FLINK_HOME}/lib/" \
 && ln -s "${FLINK_HOME}/lib/flink-python-${FLINK_VERSION}.jar" "${FLINK_HOME}/opt/"

# The Kafka connector on the cluster class path (lib/), as `stack` links it, not per job with
# --jars: a Kafka client thread outliving a stopped job hit ClassNotFoundException otherwise.
COPY --from=jars /jars/ ${FLINK_HOME}/lib/

# The project, installed in editable mode: the TaskManagers' embedded interpreter imports the
# job's modules from this one copy, and job/sql.py finds sql/ beside job/.
WORKDIR /opt/txn-correlator
COPY pyproject.toml README.md requirements.lock ./
COPY job/ job/
COPY generator/ generator/
COPY stack/ stack/
COPY store/ store/
COPY sql/ sql/
RUN python -m pip install --no-cache-dir -c requirements.lock -e .

# Cluster configuration for containers (bind to 0.0.0.0, service names, state in S3); the
# settings themselves are those of flink-conf/config.yaml. The entrypoint rewrites this file
# at start (JOB_MANAGER_RPC_ADDRESS, FLINK_PROPERTIES), so the flink user owns it.
COPY --chown=flink:flink deploy/flink/config.yaml /opt/flink/conf/config.yaml

WORKDIR /opt/flink
USER flink
