"""The team stack's files agree with each other and with the code: docker-compose.yml,
Dockerfile, .dockerignore, .env.example, docker/postgres-init.sql, prefect.yaml and
ops.settings.POOLS. Docker cannot run here, so everything is checked by parsing."""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from ops.settings import POOLS
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
SERVICES: dict = COMPOSE["services"]
PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
ENV_EXAMPLE = (REPO / ".env.example").read_text()

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}...; `$$` is a literal dollar sign.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}")

EXPECTED_SERVICES = {"postgres", "prefect-server", "mlflow", "deploy", "worker-cpu", "worker-gpu", "watcher"}

# Variables that hold credentials, and a URL with a password in it (scheme://user:password@host).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH|TOKEN|CREDENTIAL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]*:[^/\s@]+@")


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def resolve(value: str) -> str:
    """Compose interpolation with the defaults (an empty environment); a required variable
    (${VAR:?error}) becomes empty."""
    return VARIABLE.sub(lambda m: (m.group(3) or "") if m.group(2) in ("-", ":-") else "", str(value))


def required(value) -> str | None:
    """The variable's name when `value` is exactly one required variable, ${VAR:?error}."""
    match = VARIABLE.fullmatch(str(value))
    return match.group(1) if match and match.group(2) == ":?" else None


def args(service: str) -> list[str]:
    command = SERVICES[service].get("command", [])
    return shlex.split(resolve(command)) if isinstance(command, str) else [resolve(a) for a in command]


def option(service: str, name: str) -> str:
    argv = args(service)
    assert name in argv, f"{service}: no {name} in {argv}"
    return argv[argv.index(name) + 1]


def environment(service: str, raw: bool = False) -> dict[str, str]:
    """The service's environment, interpolated with the defaults (raw: as written)."""
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) if raw else resolve(v) for k, v in env.items()}


def has_healthcheck(service: str) -> bool:
    check = SERVICES[service].get("healthcheck") or {}
    return bool(check.get("test")) and check["test"] != ["NONE"] and not check.get("disable")


def one_shot(service: str) -> bool:
    return SERVICES[service].get("restart") == "no"


def keel_services() -> list[str]:
    """The services that run Keel code (they carry KEEL_PROJECT_DIR)."""
    return [name for name in SERVICES if "KEEL_PROJECT_DIR" in environment(name)]


def workers() -> dict[str, str]:
    """worker service -> the pool it polls."""
    return {name: option(name, "--pool") for name in SERVICES
            if args(name)[:3] == ["prefect", "worker", "start"]}


def container_ports(service: str) -> set[str]:
    ports = set()
    for port in SERVICES[service].get("ports", []):
        if isinstance(port, dict):
            ports.add(str(port["target"]))
        else:
            ports.add(resolve(port).rsplit(":", 1)[-1].split("/")[0])
    return ports


def nvidia_devices(service: str) -> list[dict]:
    reservations = SERVICES[service].get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in reservations.get("devices", []) if d.get("driver") == "nvidia"]


def deployment(entrypoint: str) -> dict:
    found = [d for d in PREFECT_YAML["deployments"] if d["entrypoint"] == entrypoint]
    assert len(found) == 1, f"prefect.yaml: {len(found)} deployments of {entrypoint}"
    return found[0]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_copies() -> list[str]:
    """Every source path of a COPY (no --from stages)."""
    sources = []
    for instruction, rest in dockerfile_instructions():
        if instruction == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            assert "--from" not in rest
            sources += [p.rstrip("/") for p in parts[:-1]]
    return sources


def dockerfile_workdir() -> str:
    workdirs = [rest.strip() for instruction, rest in dockerfile_instructions() if instruction == "WORKDIR"]
    assert len(workdirs) == 1, f"expected one WORKDIR, found {workdirs}"
    return workdirs[0]


def dockerignore_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: `**` any folders, `*` and `?` within one name."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def dockerignored(path: str) -> bool:
    """.dockerignore semantics: the last matching pattern wins, `!` re-includes, and a pattern
    that matches a folder excludes everything inside it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = dockerignore_pattern(line.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------- services


def test_services_healthchecks_and_dependencies():
    assert EXPECTED_SERVICES <= set(SERVICES)
    for name, service in SERVICES.items():
        if not one_shot(name):
            assert has_healthcheck(name), f"{name} runs for good but has no healthcheck"
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions (the long form)"
        for target, spec in depends_on.items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            if one_shot(target):
                assert condition == "service_completed_successfully", f"{name} -> {target}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}: {condition}"
                assert has_healthcheck(target), f"{name} waits for {target}, which has no healthcheck"
    assert one_shot("deploy") and args("deploy") == ["keel", "stack", "deploy"]
    for name in ("worker-cpu", "worker-gpu", "watcher"):
        assert SERVICES[name]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"


def test_worker_pools_match_prefect_yaml_and_stack():
    pools = workers()
    assert set(pools) >= {"worker-cpu", "worker-gpu"}
    assert pools["worker-cpu"] == "cpu" and pools["worker-gpu"] == "gpu"
    deployed = {d["work_pool"]["name"] for d in PREFECT_YAML["deployments"]}
    assert set(pools.values()) == deployed == set(POOLS)
    for name in pools:
        assert option(name, "--type") == "process"  # the type ops.provision creates the pools with
        assert "--with-healthcheck" in args(name)
    assert deployment("flows/training.py:training_flow")["work_pool"]["name"] == "gpu"
    assert deployment("flows/batch_predict.py:batch_predict_flow")["work_pool"]["name"] == "cpu"
    assert deployment("flows/validate_incoming.py:validate_incoming_flow")["work_pool"]["name"] == "cpu"


def test_only_the_gpu_worker_reserves_a_gpu():
    (device,) = nvidia_devices("worker-gpu")
    assert "gpu" in device["capabilities"] and device.get("count", "all") in (1, "all")
    for name, pool in workers().items():
        if pool != "gpu":
            assert not nvidia_devices(name), f"{name} (pool {pool}) reserves a GPU"
            assert environment(name).get("CUDA_VISIBLE_DEVICES") == "", f"{name} should hide GPUs"


def test_server_addresses_ports_and_databases():
    prefect_port = option("prefect-server", "--port")
    mlflow_port = option("mlflow", "--port")
    assert container_ports("prefect-server") == {prefect_port}
    assert container_ports("mlflow") == {mlflow_port}
    assert f"localhost:{prefect_port}/api/health" in str(SERVICES["prefect-server"]["healthcheck"]["test"])
    assert f"localhost:{mlflow_port}/health" in str(SERVICES["mlflow"]["healthcheck"]["test"])

    assert set(keel_services()) >= {"deploy", "worker-cpu", "worker-gpu", "watcher"}
    for name in keel_services():
        env = environment(name)
        assert env["PREFECT_API_URL"] == f"http://prefect-server:{prefect_port}/api", name
        assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}", name

    # MLflow answers the host name the workers use (its DNS-rebinding protection), and localhost.
    allowed = environment("mlflow")["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    for host in (f"mlflow:{mlflow_port}", "localhost:5000"):
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), f"MLflow rejects Host: {host}"

    postgres = environment("postgres")
    argv = args("mlflow")
    assert "--serve-artifacts" in argv
    artifacts = option("mlflow", "--artifacts-destination")
    assert any(str(v).endswith(f":{artifacts}") for v in SERVICES["mlflow"]["volumes"])
    mlflow_db = urlsplit(environment("mlflow")["MLFLOW_BACKEND_STORE_URI"])
    prefect_db = urlsplit(environment("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert mlflow_db.scheme == "postgresql+psycopg2" and prefect_db.scheme == "postgresql+asyncpg"
    for url in (mlflow_db, prefect_db):
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (url.username, url.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert prefect_db.path == f"/{postgres['POSTGRES_DB']}" == "/prefect"
    mlflow_name = mlflow_db.path.lstrip("/")
    assert mlflow_name == "mlflow"
    init_sql = (REPO / "docker" / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE\s+DATABASE\s+\"?{mlflow_name}\"?\s*;", init_sql, re.IGNORECASE)
    assert any(str(v).startswith("./docker/postgres-init.sql:/docker-entrypoint-initdb.d/")
               for v in SERVICES["postgres"]["volumes"])


def test_no_secret_on_a_command_line():
    """Every user of a host sees every process's command line (`ps`): passwords, database
    URLs and credentials reach the servers and workers through the environment only."""
    for name, service in SERVICES.items():
        for key in ("command", "entrypoint", "healthcheck"):
            value = service.get(key) or ""
            if key == "healthcheck":
                value = (value or {}).get("test", "")
            text = value if isinstance(value, str) else " ".join(map(str, value))
            secrets = sorted(m.group(1) for m in VARIABLE.finditer(text) if SECRET_NAME.search(m.group(1)))
            assert not secrets, f"{name}'s {key} has {secrets} in it"
            assert not re.search(r"\$\$\{?\w*(PASSWORD|SECRET|AUTH|TOKEN)", text), f"{name}'s {key} expands a secret"
            assert not URL_WITH_PASSWORD.search(text), f"{name}'s {key} holds a URL with a password"
            assert "--backend-store-uri" not in text and "--registry-store-uri" not in text, name


def test_both_servers_require_credentials_from_env():
    example = env_example()
    prefect = environment("prefect-server", raw=True)
    auth_string = required(prefect["PREFECT_SERVER_API_AUTH_STRING"])
    assert auth_string, "the Prefect server must require an auth string, set in .env"
    assert option("mlflow", "--app-name") == "basic-auth"
    mlflow = environment("mlflow", raw=True)
    admin_password = required(mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"])
    secret_key = required(mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"])
    assert admin_password and secret_key and resolve(mlflow["MLFLOW_AUTH_ADMIN_USERNAME"])
    for variable in (auth_string, admin_password, secret_key):
        assert example[variable] == "", f".env.example ships a value for {variable}: every stack would share it"
    assert "PREFECT_SERVER_API_AUTH_STRING" not in environment("postgres")
    # MLflow's auth settings: mounted read-only, no secret in them, the users on their own
    # volume (not under the artifacts it serves, where anyone with READ could download them).
    ini = mlflow["MLFLOW_AUTH_CONFIG_PATH"]
    (source,) = [str(v).split(":")[0] for v in SERVICES["mlflow"]["volumes"] if str(v).split(":")[1:2] == [ini]]
    config = configparser.ConfigParser()
    assert config.read(REPO / source), f"{source} is missing"
    assert not config["mlflow"].get("admin_password") and not config["mlflow"].get("admin_username")
    if config.getint("mlflow", "auth_cache_ttl_seconds", fallback=0) > 0:  # a cache per worker
        assert option("mlflow", "--workers") == "1", "with more workers a changed password stays valid on the others"
    database = config["mlflow"]["database_uri"]
    assert database.startswith("sqlite:////"), database
    folder = str(PurePosixPath(database.removeprefix("sqlite:///")).parent)
    volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in SERVICES["mlflow"]["volumes"]}
    assert volumes.get(folder) in (COMPOSE.get("volumes") or {}), f"{folder} (MLflow's users) is not on a named volume"
    assert not folder.startswith(option("mlflow", "--artifacts-destination"))
    assert folder in DOCKERFILE, f"the image does not create {folder} for user keel"
    assert mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")


def test_keel_services_sign_in_and_get_no_database_password():
    prefect = environment("prefect-server", raw=True)
    mlflow = environment("mlflow", raw=True)
    server_only = {"PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_DATABASE_CONNECTION_URL", "MLFLOW_BACKEND_STORE_URI",
                   "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "POSTGRES_PASSWORD"}
    for name in keel_services():
        env = environment(name, raw=True)
        assert env["PREFECT_API_AUTH_STRING"] == prefect["PREFECT_SERVER_API_AUTH_STRING"], name
        assert env["MLFLOW_TRACKING_USERNAME"] == mlflow["MLFLOW_AUTH_ADMIN_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"], name
        assert not server_only & set(env), f"{name} gets {sorted(server_only & set(env))}"
        assert not [k for k, v in env.items() if "POSTGRES_PASSWORD" in v or URL_WITH_PASSWORD.search(resolve(v))], name


def test_mlflow_job_execution_is_off():
    assert environment("mlflow")["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_watcher_watches_the_validation_deployments_folder():
    validation = deployment("flows/validate_incoming.py:validate_incoming_flow")
    assert option("watcher", "--landing") == validation["parameters"]["input_path"]
    assert args("watcher")[:2] == ["keel", "watch"]


# --------------------------------------------------------------------------- variables and volumes


def test_env_example_lists_exactly_the_variables_used():
    example = env_example()
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE_TEXT)}
    assert used, "docker-compose.yml uses no variables?"
    assert used == set(example), (f"missing from .env.example: {sorted(used - set(example))}; "
                                  f"unused in docker-compose.yml: {sorted(set(example) - used)}")
    for match in VARIABLE.finditer(COMPOSE_TEXT):
        name, kind, default = match.groups()
        if kind in (":-", "-"):
            assert default == example[name], f"{name}: default {default!r} here, {example[name]!r} in .env.example"


def test_named_volumes_are_declared_and_used():
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                source = volume.get("source") if volume.get("type", "volume") == "volume" else None
            else:
                source = str(volume).split(":")[0] if ":" in str(volume) else None  # none: anonymous
            if source and not source.startswith((".", "/", "~", "$")):  # not a bind mount
                used.add(source)
    assert used <= declared, f"undeclared volumes: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused volumes: {sorted(declared - used)}"


# --------------------------------------------------------------------------- the image


def test_dockerfile_ships_the_packages_and_the_project_dir():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*").rstrip(".") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == {"keel", "tasks", "flows", "cli", "ops"}
    copies = set(dockerfile_copies())
    assert packages | {"prefect.yaml", "conf", "pyproject.toml"} <= copies, f"COPY sources: {sorted(copies)}"
    for source in copies:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert not dockerignored(source), f".dockerignore excludes {source}, which the Dockerfile copies"
    workdir = dockerfile_workdir()
    assert dockerfile_env()["KEEL_PROJECT_DIR"] == workdir
    # ops.settings finds prefect.yaml from its own file (PROJECT_DIR): the packages must be
    # installed editable from WORKDIR, not copied into site-packages.
    installs = [rest for instruction, rest in dockerfile_instructions()
                if instruction == "RUN" and "pip install" in rest]
    assert installs and re.search(r"pip install\b[^&|;]*(--editable|-e)\s+\.(\s|$)", installs[-1]), installs
    for name in keel_services():
        assert environment(name)["KEEL_PROJECT_DIR"] == workdir
        assert environment(name)["KEEL_HOME"] == workdir
        mounts = {str(v).split(":")[1] for v in SERVICES[name].get("volumes", [])}
        assert f"{workdir}/data" in mounts, f"{name}: data/ is not on a volume"
    # The deployments run from KEEL_PROJECT_DIR, which is the image's WORKDIR.
    pull_dirs = [step["prefect.deployments.steps.set_working_directory"]["directory"]
                 for step in PREFECT_YAML["pull"] if "prefect.deployments.steps.set_working_directory" in step]
    assert pull_dirs == ["{{ $KEEL_PROJECT_DIR }}"]


def test_the_image_knows_the_commit_it_was_built_from():
    """.git stays out of the image (.dockerignore): the commit comes in as a build argument
    (docker compose passes KEEL_GIT_COMMIT from the environment; `make image` sets it) and
    stays in the image's environment, where git_commit() finds it."""
    assert dockerignored(".git")
    instructions = dockerfile_instructions()
    args = [rest.strip() for instruction, rest in instructions if instruction == "ARG"]
    assert "KEEL_GIT_COMMIT=unknown" in args
    assert dockerfile_env()["KEEL_GIT_COMMIT"] == "${KEEL_GIT_COMMIT}"
    build = COMPOSE["x-keel-image"]["build"]
    assert build["context"] == "." and build["args"]["KEEL_GIT_COMMIT"] == "${KEEL_GIT_COMMIT:-unknown}"
    for name in keel_services():
        assert SERVICES[name].get("build") == build, f"{name} is not built from the Keel image"
    makefile = (REPO / "Makefile").read_text()
    assert "--build-arg KEEL_GIT_COMMIT=" in makefile


@pytest.mark.parametrize("baked, expected", [("0123abc", "0123abc"), (None, "unknown")])
def test_git_commit_without_git_metadata_is_the_baked_one(tmp_path, baked, expected):
    """Keel as the image holds it: the packages without .git."""
    shutil.copytree(REPO / "keel", tmp_path / "keel", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "KEEL_GIT_COMMIT"}
    env |= {"PYTHONPATH": str(tmp_path)} | ({"KEEL_GIT_COMMIT": baked} if baked else {})
    code = "from keel.tracking.client import git_commit; print(git_commit())"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_git_commit_in_a_checkout_is_the_checkouts():
    """A checkout knows its commit; an inherited KEEL_GIT_COMMIT does not override it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    code = "from keel.tracking.client import git_commit; print(git_commit())"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "KEEL_GIT_COMMIT": "stale"},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().removesuffix("+dirty") == head, done.stderr


@pytest.mark.parametrize("path, ignored", [
    (".venv", True), (".git", True), ("mlruns/mlflow.db", True), ("mlruns/.gitkeep", False),
    ("data/versions", True), ("data/checkpoints", True), ("data/curated", True), ("reports", True),
    ("tests", True), ("benchmarks", True), ("keel/__pycache__", True), (".keel-stack", True), (".keel-watch", True), (".env", True),
    ("docker/mlflow-auth.ini", True),
    ("data/sign-mnist/sign_mnist_train.csv.gz", False), ("keel/training/train.py", False),
])
def test_dockerignore_keeps_run_outputs_out(path, ignored):
    assert dockerignored(path) == ignored
