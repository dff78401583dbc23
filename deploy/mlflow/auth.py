"""MLflow's basic-auth app for the production stack: its configuration file and the pipeline's own user.

    python deploy/mlflow/auth.py config PATH   # before `mlflow server --app-name basic-auth`
    python deploy/mlflow/auth.py ensure-user   # once the server answers; run again to rotate the password

``config`` writes the auth app's ini file from the environment, because the app reads its database URI (which
holds the database password) only from that file: ``MLFLOW_AUTH_DATABASE_URI`` and, optionally,
``MLFLOW_AUTH_DEFAULT_PERMISSION`` (READ: every signed-in user may look, only an owner may change anything).
The admin comes from ``MLFLOW_AUTH_ADMIN_USERNAME``/``MLFLOW_AUTH_ADMIN_PASSWORD``, which the server reads itself.

``ensure-user`` signs in as the admin (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) at
``MLFLOW_TRACKING_URI`` and creates ``MLFLOW_PIPELINE_USER`` with ``MLFLOW_PIPELINE_PASSWORD``, or sets that
password when the user exists. The pipeline user is no admin: it owns (MANAGE) the experiments and registered
models it creates, and nothing else; any other user can read them and change nothing.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set (see .env.example)")
    return value


def write_config(path: Path) -> None:
    permission = os.environ.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
    if permission not in PERMISSIONS:
        raise SystemExit(f"MLFLOW_AUTH_DEFAULT_PERMISSION={permission!r} is not one of {', '.join(PERMISSIONS)}")
    config = configparser.ConfigParser(interpolation=None)  # a password may contain '%'
    config["mlflow"] = {
        "default_permission": permission,
        "database_uri": _required("MLFLOW_AUTH_DATABASE_URI"),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        config.write(file)


def ensure_pipeline_user() -> str:
    """Create the pipeline's user, or set its password; says which."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    username, password = _required("MLFLOW_PIPELINE_USER"), _required("MLFLOW_PIPELINE_PASSWORD")
    auth = AuthServiceClient(_required("MLFLOW_TRACKING_URI"))
    try:
        auth.create_user(username, password)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(username, password)
        return f"MLflow user {username!r} exists; its password is set from MLFLOW_PIPELINE_PASSWORD"
    return f"MLflow user {username!r} created"


def main(argv: list[str]) -> int:
    if argv[:1] == ["config"] and len(argv) == 2:
        write_config(Path(argv[1]))
        return 0
    if argv == ["ensure-user"]:
        print(ensure_pipeline_user())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
