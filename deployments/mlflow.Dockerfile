# MLflow tracking server with the PostgreSQL driver (the upstream image has none).
# Build from the project root: docker build -f deployments/mlflow.Dockerfile .
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg2-binary>=2.9,<3"
