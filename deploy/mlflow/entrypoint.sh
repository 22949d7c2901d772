#!/bin/sh
# The MLflow tracking server's start (deploy/mlflow/Dockerfile): the backend store is PostgreSQL
# at MLFLOW_DB_HOST (default postgres:5432), database and user MLFLOW_DB_NAME and MLFLOW_DB_USER
# (default mlflow), password read from the file MLFLOW_DB_PASSWORD_FILE (a Docker secret, so it
# is in no environment variable or `docker inspect` output); without that file, the store is
# MLFLOW_BACKEND_STORE_URI as given (default: a SQLite file in the home folder). Arguments go to
# `mlflow server`; its other settings come from MLFLOW_* variables (the image sets host, port,
# workers and the artifacts folder).
set -eu
if [ -n "${MLFLOW_DB_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$MLFLOW_DB_PASSWORD_FILE" ]; then
    echo "mlflow: cannot read the database password file $MLFLOW_DB_PASSWORD_FILE" >&2
    exit 2
  fi
  password=$(cat "$MLFLOW_DB_PASSWORD_FILE")
  user=${MLFLOW_DB_USER:-mlflow}
  MLFLOW_BACKEND_STORE_URI="postgresql://$user:$password@${MLFLOW_DB_HOST:-postgres:5432}/${MLFLOW_DB_NAME:-mlflow}"
  export MLFLOW_BACKEND_STORE_URI
fi
export MLFLOW_BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HOME/mlflow.db}"
# The database may start after the server (swarm starts services in no order): wait for it to
# accept connections (up to MLFLOW_DB_WAIT seconds, 120) instead of failing and restarting.
if [ -n "${MLFLOW_DB_PASSWORD_FILE:-}" ]; then
  python - "${MLFLOW_DB_HOST:-postgres:5432}" "${MLFLOW_DB_WAIT:-120}" <<'PYTHON'
import socket, sys, time
host, _, port = sys.argv[1].rpartition(":")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        break
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"mlflow: the database {sys.argv[1]} does not answer ({error})")
        time.sleep(2)
PYTHON
fi
exec mlflow server "$@"
