# syntax=docker/dockerfile:1
# The model sync: mirrors published model versions from storage to TF Serving's model base
# path and writes models.config (DESIGN.md decision 6). Lean: boto3 only. One image, two roles:
#   xray-model-sync --once    Kubernetes init container / compose one-shot service
#   xray-model-sync --watch   sidecar (the default command)
# Build from the repository root:
#
#   docker build -f infra/docker/sync.Dockerfile -t xray-sync .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml ./
COPY infra/docker/extra_requirements.py infra/docker/install_commands.py ./
RUN python extra_requirements.py sync > requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement requirements.txt \
 && /opt/venv/bin/python install_commands.py pyproject.toml /opt/venv/bin xray-model-sync

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
      --shell /usr/sbin/nologin app \
 && mkdir -p /models \
 && chown app:app /models
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# serving/ also holds the local model server (TensorFlow): only serving.sync and what it
# imports run here (tests/infra checks the import closure stays within these packages).
COPY common/ common/
COPY storage/ storage/
COPY model_contract/ model_contract/
COPY serving/ serving/
# Bytecode compiled into the image: the containers run with PYTHONDONTWRITEBYTECODE on a
# read-only file system, so without it every start compiled these sources again (about
# 0.1 s of each start of the sync; bench/REPORT.md has the functions' figure).
RUN python -m compileall -q -j 0 common storage model_contract serving
USER 10001:10001
# The shared volume TF Serving reads; mounted over in compose and Kubernetes.
VOLUME ["/models"]
# No HEALTHCHECK: as an init step it simply exits; as a sidecar its liveness is the process
# itself (it logs and retries storage errors instead of exiting).
CMD ["xray-model-sync", "--watch"]
