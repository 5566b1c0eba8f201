# syntax=docker/dockerfile:1
#
# Image for cmx-connect-exporter. Settings come only from the environment at run
# time (CMX_*, with CMX_PASSWORD_FILE for a mounted secret); none is baked in.
#   docker build -t cmx-connect-exporter .
#   docker run --rm -p 10180:10180 --read-only -e CMX_DEMO=true cmx-connect-exporter

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Stage 1: build the project's wheel and the wheels of its dependencies.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cmx_connect_exporter ./cmx_connect_exporter
COPY cmx_simulator ./cmx_simulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: install those wheels, offline, into a clean slim base.
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cmx-connect-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Cisco CMX Connect guest Wi-Fi sessions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl \
 && groupadd --system --gid 10001 cmx \
 && useradd --system --uid 10001 --gid cmx --no-create-home --shell /usr/sbin/nologin cmx

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 10180

# Asks /healthz on the port of CMX_LISTEN_ADDRESS (default 10180), over HTTPS when CMX_WEB_CONFIG_FILE
# turns TLS on, with the exporter's own Python: no curl needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "cmx_connect_exporter.healthcheck"]

ENTRYPOINT ["cmx-connect-exporter"]
