# syntax=docker/dockerfile:1
# The HTTP functions (auth | predict | gradcam | history) in ONE lean image: no TensorFlow
# (DESIGN.md decision 1). FUNCTION_TARGET picks the function; functions-framework reads it,
# and PORT, itself. Build from the repository root:
#
#   docker build -f infra/docker/functions.Dockerfile -t xray-functions .
#   docker run --env-file .env -e FUNCTION_TARGET=predict -p 8080:8080 xray-functions
#   docker run --env-file .env -p 8080:8080 xray-functions \
#       xray-gateway --host 0.0.0.0 --port 8080      # all four on one port
#
# The build context is filtered by functions.Dockerfile.dockerignore (BuildKit) next to this file.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- dependencies: only the `functions` extra, into a virtual environment --------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# pyproject.toml alone decides this layer: editing the source does not reinstall anything.
COPY pyproject.toml ./
COPY infra/docker/extra_requirements.py infra/docker/install_commands.py ./
RUN python extra_requirements.py functions > requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --requirement requirements.txt \
 && /opt/venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)" \
 && /opt/venv/bin/python install_commands.py pyproject.toml /opt/venv/bin xray-gateway xray-users

# --- runtime: the venv, the source, a non-root user -------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
      --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# Only the packages the functions import (tests/infra checks the import closure).
COPY common/ common/
COPY storage/ storage/
COPY model_contract/ model_contract/
COPY imaging/ imaging/
COPY functions/ functions/
# Bytecode compiled into the image: the containers run with PYTHONDONTWRITEBYTECODE on a
# read-only file system, so without it every start compiled these sources again (about
# 0.1 s of a function's cold start; bench/REPORT.md).
RUN python -m compileall -q -j 0 common storage model_contract imaging functions
USER 10001:10001
EXPOSE 8080
# Knative and Cloud Run probe the port themselves; this serves plain `docker run` and compose.
# The functions have no side-effect-free GET on every target, so the check is "port accepts".
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('PORT', '8080'))), 2).close()"]
# No default FUNCTION_TARGET on purpose: a container started without one fails at once
# ("Missing option '--target'") instead of silently serving the wrong function.
CMD ["functions-framework", "--source", "functions/main.py"]
