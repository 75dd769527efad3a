# sda-serve: the ONNX Runtime video classification service (no torch in this image).
# CUDA 13 + cuDNN 9 runtime: what onnxruntime-gpu 1.31 is built against. Without a GPU (or without
# the NVIDIA container runtime) the service runs on the CPU and says so in /health, unless
# SDA_REQUIRE_GPU=true, which makes that a startup failure.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python from the base distribution; versions follow the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sda

WORKDIR /app

# Dependencies first, pinned by requirements/serve.lock (`make lock` resolves it from the [serve]
# extra of pyproject.toml; a test fails when the two disagree): this layer is rebuilt only when the
# lock changes, not when the code does.
COPY requirements/serve.lock requirements/serve.lock
RUN pip install --no-cache-dir -r requirements/serve.lock \
    && python -c "import onnxruntime, av, fastapi; print('onnxruntime', onnxruntime.__version__)"

# The code last: a code change rebuilds only these layers. --no-deps: everything is installed above.
COPY pyproject.toml README.md ./
COPY videocore/ videocore/
COPY service/ service/
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import sys, service.app; sys.exit('torch' in sys.modules)"

# The embedded default model (models/<name>/<version>/model-{T}f.onnx + model.json); mount another
# repository over /models to serve other models.
COPY models/ /models/

ENV SDA_MODELS_DIR=/models \
    SDA_PROVIDERS=auto

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
