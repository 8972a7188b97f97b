# The serving image: Debian's python3 in a venv, the service, the shipped models. No torch.
#   docker build -t vqvae-codec .                          # CPU (onnxruntime)
#   docker build -t vqvae-codec:gpu --build-arg RUNTIME=gpu .   # NVIDIA GPU (onnxruntime-gpu + CUDA libraries)

ARG RUNTIME=cpu

FROM debian:bookworm-slim AS build
ARG RUNTIME
# The CUDA build replaces the CPU one; its [cuda,cudnn] extra brings the CUDA 12 / cuDNN 9 libraries.
ARG ONNXRUNTIME_GPU="onnxruntime-gpu[cuda,cudnn]"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY runtime ./runtime
COPY service ./service
COPY codec ./codec
# Only the service, the packages it reads (contract, runtime) and the offline codec CLI are copied, so
# only they are installed: no training, export, data sets or benchmarks in the image.
RUN pip install . \
 && if [ "$RUNTIME" = "gpu" ]; then \
      pip uninstall -y onnxruntime && pip install "$ONNXRUNTIME_GPU"; \
    fi \
 && pip uninstall -y pip setuptools \
 && python -m compileall -q /opt/venv \
 && find /opt/venv -name "tests" -path "*site-packages/*" -prune -exec rm -rf {} +

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin codec
COPY --from=build /opt/venv /opt/venv
COPY models /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VQVAE_HOST=0.0.0.0 \
    VQVAE_PORT=8000 \
    VQVAE_GRPC_PORT=8001 \
    VQVAE_MODELS_DIR=/app/models
WORKDIR /app
USER 10001:10001
# HTTP (REST, v2, probes, metrics) and gRPC (the Open Inference Protocol), as Triton's 8000 and 8001.
EXPOSE 8000 8001
# Readiness, not mere liveness: a container whose models failed to load is unhealthy.
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 CMD ["python", "-m", "service.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
