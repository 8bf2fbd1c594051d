-- One PostgreSQL for the local stack, one database per service (run on first start only).
CREATE DATABASE labelstudio;
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
