# The gpupool operator image (also runs simcloud, for demo installs: `python -m simcloud`).
#
# NOT BUILT OR TESTED HERE: the development machine has no Docker engine and no
# image registry. The chart's tests run its pods on KWOK nodes, which never pull
# or start the image; they prove the manifests, not this file. Build and smoke it
# wherever Docker exists:
#   docker build -t ghcr.io/gpupool/gpupool-operator:0.1.0 .
#   docker run --rm ghcr.io/gpupool/gpupool-operator:0.1.0 --help
#
# Two stages, so the runtime image has no compiler or build cache, only the
# installed package and its dependencies.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/gpupool \
 && /opt/gpupool/bin/pip install --upgrade pip \
 && /opt/gpupool/bin/pip install .

FROM python:3.11-slim
# A fixed numeric user, so Kubernetes can verify runAsNonRoot without /etc/passwd lookups;
# the chart's securityContext runs as the same UID.
RUN groupadd --system --gid 10001 gpupool \
 && useradd --system --uid 10001 --gid gpupool --no-create-home --home-dir /nonexistent gpupool
COPY --from=build /opt/gpupool /opt/gpupool
ENV PATH=/opt/gpupool/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 8080: /metrics; 8081: /healthz (kopf's liveness endpoint).
EXPOSE 8080 8081
ENTRYPOINT ["gpupool"]
CMD ["run"]
