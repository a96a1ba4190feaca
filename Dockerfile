# syntax=docker/dockerfile:1
# mmserve: CPU image by default; `--build-arg VARIANT=gpu` installs tensorflow[and-cuda];
# `--build-arg TRAIN=1` adds the trainer's extra (mmserve-train; k8s/training runs it).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ARG VARIANT=cpu
ARG TRAIN=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
# The base install is the client only: the server needs the serve extra (gpu includes it).
RUN extras=serve; \
    if [ "$VARIANT" = "gpu" ]; then extras=gpu; fi; \
    if [ "$TRAIN" = "1" ]; then extras="$extras,train"; fi; \
    pip install ".[$extras]"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --create-home --uid 10001 mmserve \
    && mkdir -p /models /data \
    && chown mmserve:mmserve /models /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MMSERVE_HOST=0.0.0.0 \
    MMSERVE_PORT=8000 \
    MMSERVE_MODEL_STORE=/models
WORKDIR /data
USER mmserve
EXPOSE 8000
# Ready = model loaded, warmed up and golden-checked; the start period covers that.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status != 200)"
CMD ["mmserve", "serve"]
