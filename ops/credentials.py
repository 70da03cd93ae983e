"""The team stack's credentials and env files.

Both servers require credentials: MLflow runs its basic-auth app, Prefect checks an auth
string. `keel stack up` generates them once into `<stack dir>/credentials.env` (mode 0600,
reused by the next `up`); the servers get their own secrets through their own 0600 env files.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from secrets import token_urlsafe

from dotenv import dotenv_values

from keel.core.atomic import atomic_path
from keel.core.errors import KeelError
from ops.settings import CLIENT_CREDENTIALS, CREDENTIALS_FILE, MLFLOW_AUTH_DB, STACK_USER


def stack_credentials(stack_dir: Path) -> dict[str, str]:
    """The client credentials in `<stack_dir>/credentials.env`; when the file is missing they
    are generated (secrets.token_urlsafe) and written to it, mode 0600."""
    path = Path(stack_dir) / CREDENTIALS_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # our file: readable by its owner only
        values = read_env_file(path)
        missing = [name for name in CLIENT_CREDENTIALS if not values.get(name)]
        if missing:
            raise KeelError(f"{path} has no {', '.join(missing)}; move the file away and `keel stack up` "
                            f"writes new credentials (then also move {Path(stack_dir) / MLFLOW_AUTH_DB} away)")
        return {name: values[name] for name in CLIENT_CREDENTIALS}
    credentials = {"MLFLOW_TRACKING_USERNAME": STACK_USER, "MLFLOW_TRACKING_PASSWORD": token_urlsafe(24),
                   "PREFECT_API_AUTH_STRING": f"{STACK_USER}:{token_urlsafe(24)}"}
    write_env_file(path, credentials, "Credentials of the Keel team stack (keel stack up wrote them; keep them private).\n"
                   f"Use them in a shell with: set -a; . {path}; set +a\n"
                   "The Prefect UI asks for PREFECT_API_AUTH_STRING; the MLflow UI for the user and password.")
    return credentials


_BARE_VALUE = re.compile(r"[A-Za-z0-9_\-:./@+=%,]*")


def write_env_file(path: Path, values: dict[str, str], header: str = "") -> None:
    """KEY=value lines (for `set -a; . FILE` and python-dotenv) in a file only its owner can
    read or write: written to a 0600 temporary beside it (keel.core.atomic.atomic_path) and renamed into place."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in values.items():
        if _BARE_VALUE.fullmatch(value):
            lines.append(f"{key}={value}")
        elif "'" not in value and "\n" not in value:
            lines.append(f"{key}='{value}'")  # single quotes: no expansion by the shell or dotenv
        else:
            raise KeelError(f"{key} for {path} holds a quote or a line break; percent-encode it "
                            "(as a URL password must be) and start again")
    with atomic_path(Path(path)) as tmp:
        os.chmod(tmp, 0o600)  # atomic_path creates it with the umask's mode: private before the secrets are written
        tmp.write_text("\n".join(lines) + "\n")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value pairs of an env file (python-dotenv, no ${VAR} expansion)."""
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def check_mlflow_credentials(mlflow_url: str, credentials: dict[str, str], credentials_file: Path,
                             auth_db: Path) -> None:
    """Fails when the MLflow server refuses the stack's credentials: its user database was
    created with other ones (credentials.env was replaced)."""
    pair = f"{credentials['MLFLOW_TRACKING_USERNAME']}:{credentials['MLFLOW_TRACKING_PASSWORD']}"
    request = urllib.request.Request(f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=60):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KeelError(f"MLflow refuses the credentials in {credentials_file}: its user database {auth_db} "
                            "was created with others; put the old credentials.env back, or move both files "
                            "away for new credentials") from None
        raise KeelError(f"MLflow at {mlflow_url} answered HTTP {exc.code} to a signed-in request") from None
    except urllib.error.URLError as exc:
        raise KeelError(f"MLflow at {mlflow_url} does not answer ({exc.reason})") from None


def url_passwords(url: str) -> list[str]:
    """The password of `url`, as written and percent-decoded (none: [])."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return sorted({password, urllib.parse.unquote(password)}) if password else []
