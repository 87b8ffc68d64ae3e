# The control plane image for docker-compose.gpu.yml (Triton runs in its own NGC container).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY control_plane ./control_plane
COPY conch_manifest ./conch_manifest
COPY exporters ./exporters
COPY triton ./triton
# No extras: the embedded Triton/Redis, the demo and the benchmark stay out of the image.
RUN pip install --no-cache-dir .
EXPOSE 8081
USER nobody
CMD ["conch", "serve", "--triton-url", "triton:8001", "--host", "0.0.0.0"]
