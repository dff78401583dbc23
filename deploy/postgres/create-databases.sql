-- Run by the postgres image once, on an empty data volume (/docker-entrypoint-initdb.d), as POSTGRES_USER.
-- One server, one database per store: each can be backed up, restored or moved out on its own.
CREATE DATABASE airflow;    -- Airflow's metadata and the Celery result backend
CREATE DATABASE mlflow;     -- MLflow's tracking and model registry store
CREATE DATABASE mlflow_auth; -- MLflow's users and permissions (the basic-auth app)
CREATE DATABASE pipeline;   -- the pipeline's promotion log
CREATE DATABASE warehouse;  -- the demo feature warehouse (SEED_DEMO_WAREHOUSE=true); point PIPELINE_SOURCE_URL at yours
