# syntax=docker/dockerfile:1
# The training job (DESIGN.md decisions 7 and 9), from the official TensorFlow GPU image: it
# already has Python, TensorFlow, CUDA and cuDNN, so only the rest of the `training` extra is
# installed, with TensorFlow held at the image's version. It also runs on CPU-only nodes.
# Build from the repository root:
#
#   docker build -f infra/docker/training.Dockerfile -t xray-training .
#   docker run --gpus all --env-file .env xray-training xray-train --preset seed
#   docker run --env-file .env xray-training xray-registry rollback
#   docker run --env-file .env xray-training xray-migrate s3://original-bucket/storage
#   docker run --env-file .env xray-training xray-monitor drift
#
# The job exits non-zero on failure and zero when it kept or promoted a model.

ARG TENSORFLOW_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${TENSORFLOW_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /build
COPY pyproject.toml ./
COPY infra/docker/extra_requirements.py infra/docker/install_commands.py ./
# The constraints file pins the image's own TensorFlow (after checking it meets pyproject.toml's
# pin), so tensorflow-serving-api, which depends on tensorflow, cannot pull a second copy.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python \
 && python -c "import sys; print('python', sys.version)" \
 && python extra_requirements.py training --exclude tensorflow --constraints constraints.txt \
      > requirements.txt \
 && python -m pip install --constraint constraints.txt --requirement requirements.txt \
 && python install_commands.py pyproject.toml /usr/local/bin \
      xray-train xray-export xray-registry xray-storage xray-synthetic xray-migrate \
      xray-monitor \
 && rm -rf /build

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
      --shell /usr/sbin/nologin app \
 && mkdir -p /home/app/.cache \
 && chown app:app /home/app/.cache
WORKDIR /app
# The TensorFlow side (model, export, training, synthetic data for a first database) over the
# lean packages it builds on (settings and logs, storage, the model contract and its registry CLI).
COPY common/ common/
COPY storage/ storage/
COPY model_contract/ model_contract/
COPY cnn_vit/ cnn_vit/
COPY model_export/ model_export/
COPY imaging/ imaging/
COPY training_job/ training_job/
COPY synthetic/ synthetic/
# The migration from the original system (its records are the functions' format).
COPY functions/ functions/
COPY migration/ migration/
# The monitoring job (lean, but its image is this one: NumPy, Pillow and matplotlib are here;
# it measures training images with the functions' image statistics).
COPY monitoring/ monitoring/
# Bytecode compiled into the image: the containers run with PYTHONDONTWRITEBYTECODE on a
# read-only file system, so without it every start compiled these sources again (about
# 0.1 s of a start here; bench/REPORT.md has the functions' figure).
RUN python -m compileall -q -j 0 common storage model_contract cnn_vit model_export imaging \
      training_job synthetic functions migration monitoring
USER 10001:10001
# A batch job: its health is its exit code.
HEALTHCHECK NONE
CMD ["xray-train"]
