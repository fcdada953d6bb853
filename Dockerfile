# tabserve, CPU image: the serving install only (FastAPI, uvicorn, onnxruntime, numpy), a non-root user,
# bytecode compiled, and by default the demo model baked in. docs/deployment.md has the commands and sizes.
#
#   docker build -t tabserve:cpu .            # podman: podman build --format docker (OCI drops HEALTHCHECK)
#   docker build --build-arg PRETRAIN_MODEL=0 -t tabserve:cpu-nomodel .
#   docker build --target train -t tabserve:train .   # training image: tabserve train/retrain/register
#   docker run --rm -p 127.0.0.1:8000:8000 tabserve:cpu
#   docker run --rm -p 127.0.0.1:8000:8000 -v ./bundles/churn:/models/churn:ro -e MODEL_URI=/models/churn \
#       tabserve:cpu
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------- builder
# A virtual environment with tabserve and its serving dependencies, copied whole into the final stage.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/tabserve/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/tabserve/venv
# Optional extras baked in: redis (rate-limit counters shared by replicas; 6 MB) by default; "redis,mlflow" to
# serve models:/NAME@ALIAS from an MLflow registry (deploy/compose.yaml; measured 506 MB instead of 388 MB).
ARG EXTRAS=redis
# The dependencies from pyproject.toml alone (with an empty package), so this slow layer is rebuilt only when
# pyproject.toml changes, not at every source edit.
COPY pyproject.toml README.md ./
RUN mkdir -p src/tabserve \
    && touch src/tabserve/__init__.py \
    && pip install "./${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall -y tabserve \
    && rm -rf build src
COPY src ./src
# unchecked-hash: the .pyc files stay valid whatever the files' times become when layers are copied.
RUN pip install --no-deps . \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/tabserve/venv

# ---------------------------------------------------------------------------------------------- runtime
# The same environment less what serving never runs (~50 MB): the installers, numpy's test suites and
# onnxruntime's offline tools (quantization, transformer optimizers). The image stays under 400 MB.
FROM builder AS runtime
RUN python -m pip uninstall -q -y pip setuptools \
    && find /opt/tabserve/venv -depth -type d -name tests -path "*/site-packages/numpy/*" -exec rm -rf {} + \
    && find /opt/tabserve/venv -depth -type d -path "*/site-packages/onnxruntime/*" \
         \( -name transformers -o -name quantization -o -name tools \) -exec rm -rf {} + \
    && rm -f /opt/tabserve/venv/bin/onnxruntime_test /opt/tabserve/venv/bin/f2py

# ---------------------------------------------------------------------------------------------- train
# The training image: `docker build --target train -t tabserve:train .`, then `docker run tabserve:train
# retrain --help` (the scheduled retraining of docs/lifecycle.md, deploy/k8s/retrain/cronjob.yaml). The serving
# install plus scikit-learn, skl2onnx, pandas, pyarrow ([train]) and the MLflow client ([mlflow]); root-free.
# The model stage below starts from it, so building the CPU image builds this stage too (and the other way).
FROM builder AS train
ARG TRAIN_EXTRAS=train,mlflow
RUN pip install "./[${TRAIN_EXTRAS}]" \
    && groupadd --system --gid 10001 tabserve \
    && useradd --system --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /var/lib/tabserve \
       --shell /usr/sbin/nologin tabserve
ENV TABSERVE_HOME=/var/lib/tabserve
USER 10001:10001
WORKDIR /var/lib/tabserve
ENTRYPOINT ["tabserve"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------- model
# Training needs the [train] extra: the train stage has it, and this stage's sole product is the bundle folder.
# PRETRAIN_MODEL=0 leaves the folder empty (give MODEL_URI at run).
FROM train AS model
ARG PRETRAIN_MODEL=1
# A throwaway stage: root writes /opt/tabserve/models, owned by root as the final stage wants it.
# hadolint ignore=DL3002
USER root
ENV TABSERVE_HOME=/opt/tabserve
RUN mkdir -p /opt/tabserve/models \
    && if [ "$PRETRAIN_MODEL" = "1" ]; then tabserve train --demo; fi

# ---------------------------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tabserve" \
      org.opencontainers.image.description="Tabular model serving: ONNX + onnxruntime over HTTP (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 tabserve \
    && useradd --system --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /var/lib/tabserve \
       --shell /usr/sbin/nologin tabserve
# Owned by root: the server cannot rewrite its own code or model.
COPY --from=runtime /opt/tabserve/venv /opt/tabserve/venv
COPY --from=model /opt/tabserve/models /opt/tabserve/models
# TABSERVE_WORKERS=1: in a container one process per replica, scaled by replicas (compose, HPA), keeps memory
# per model session predictable and lets the model load while uvicorn starts (cold start); scoring of large
# batches already uses one thread per CPU the container may use. Raise it for one big container.
# MODEL_URI, when set, is served instead of TABSERVE_MODEL_PATH: a bundle or model folder, or models:/NAME@ALIAS.
ENV PATH=/opt/tabserve/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TABSERVE_HOST=0.0.0.0 \
    TABSERVE_PORT=8000 \
    TABSERVE_WORKERS=1 \
    TABSERVE_HOME=/var/lib/tabserve \
    TABSERVE_MODEL_PATH=/opt/tabserve/models/demo \
    TABSERVE_PRETRAIN=false \
    MODEL_URI=""
USER 10001:10001
WORKDIR /var/lib/tabserve
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl in a slim image: Python asks /readyz (503 while loading or draining -> urlopen raises -> unhealthy).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('TABSERVE_PORT', '8000'), timeout=4)"]
CMD ["sh", "-c", "exec tabserve serve ${MODEL_URI:+\"$MODEL_URI\"}"]
