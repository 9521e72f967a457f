# syntax=docker/dockerfile:1
# capi-stream image: dependencies and the package go into a virtualenv in a build stage; the
# runtime stage copies only that virtualenv onto the same slim Python base and runs as non-root.
# Build: docker build -t capi-stream:0.1.0 .
# Run:   docker run -v "$PWD/config.yaml:/etc/capi-stream/config.yaml:ro" capi-stream:0.1.0

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/capi-stream
# Runtime dependencies only, hash-checked and wheels only: nothing is compiled.
COPY requirements-runtime.lock ./
RUN /opt/capi-stream/bin/pip install --require-hashes --only-binary=:all: \
        -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY stream ./stream
RUN /opt/capi-stream/bin/pip install --no-deps . \
    && /opt/capi-stream/bin/capi-stream --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/capi-stream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it; the Helm chart uses 10001 too.
RUN groupadd --system --gid 10001 capi \
    && useradd --system --uid 10001 --gid capi --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin capi \
    && mkdir -p /etc/capi-stream
COPY --from=build /opt/capi-stream /opt/capi-stream
USER 10001:10001
WORKDIR /tmp
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["capi-stream", "run"]
CMD ["--config", "/etc/capi-stream/config.yaml"]
