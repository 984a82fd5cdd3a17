# The tracejudge worker image (also runs enqueue/gate/validate-config).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true MLFLOW_MODEL_CATALOG_URI=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . flower
RUN useradd --create-home tracejudge
USER tracejudge
CMD ["tracejudge", "worker"]
