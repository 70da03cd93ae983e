"""`keel stack up|down|status`: the team stack as local processes, without Docker.

The same services as docker-compose.yml: a Prefect server, an MLflow tracking server with
served artifacts, and one process worker per work pool (`gpu`, concurrency 1, and `cpu`),
against the local PostgreSQL when one answers (SQLite files otherwise). `up` starts them
detached, waits until each is healthy, creates the pools and the crash-detection automation,
deploys prefect.yaml and records every process it started (pid and kernel start time) in
`<stack dir>/stack.json`; `down` stops exactly those processes, and their children, by id.

Both servers require credentials: MLflow runs its basic-auth app, Prefect checks an auth
string. `up` generates them once into `<stack dir>/credentials.env` (mode 0600, reused by the
next `up`) and hands them to the workers and the watcher through that file; they are printed
nowhere and stack.json holds no secret. The database URLs (with the PostgreSQL password, when
KEEL_STACK_POSTGRES has one) reach the servers only through their own 0600 env files, never a
command line, and the workers never see them.

Everything is configured from the environment (see `StackSettings.from_env`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from secrets import token_urlsafe

from dotenv import dotenv_values

from keel.core import settings
from keel.core.errors import KeelError
from keel.core.io import atomic_path
from keel.core.secrets import redact

# The checkout (or /opt/keel in the image) that holds prefect.yaml, conf/ and the flows.
PROJECT_DIR = Path(os.environ.get("KEEL_PROJECT_DIR") or Path(__file__).resolve().parents[1])

# Work pools and their concurrency limits (None: unlimited). Training goes to `gpu`, one run
# at a time per GPU; scoring and validation go to `cpu`. prefect.yaml and docker-compose.yml
# use the same names (a test checks).
POOLS: dict[str, int | None] = {"gpu": 1, "cpu": None}

CRASH_AUTOMATION = "keel: mark flow runs without heartbeats crashed"

# Files in the stack folder. credentials.env: what a client needs (users, workers, the watcher);
# the *-server.env files: what only the servers need (database URLs, server-side secrets).
CREDENTIALS_FILE = "credentials.env"
PREFECT_SERVER_ENV = "prefect-server.env"
MLFLOW_SERVER_ENV = "mlflow-server.env"
MLFLOW_AUTH_INI = "mlflow-auth.ini"  # MLflow's basic-auth settings (its user database), no secret
MLFLOW_AUTH_DB = "mlflow-auth.db"
CLIENT_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
STACK_USER = "keel"

# Variables only a server may hold: a worker, the watcher or `prefect deploy` never inherits them.
SERVER_ONLY_ENV = (
    "KEEL_STACK_POSTGRES", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_PASSWORD",
    "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI",
    "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)


@dataclass
class StackSettings:
    stack_dir: Path
    postgres: str  # a PostgreSQL server URL, or "sqlite" for SQLite files in stack_dir
    db_prefix: str = "keel"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    heartbeat_seconds: int = 30
    crash_after_seconds: int = 90
    poll_seconds: int = 5
    deploy: bool = True  # deploy prefect.yaml and start the landing-folder watcher
    landing: str = "data/landing/incoming"
    watch_dataset: str = "conf/datasets/sign-mnist.yaml"

    @classmethod
    def from_env(cls, **overrides) -> StackSettings:
        """KEEL_STACK_DIR (default <KEEL_HOME>/.keel-stack), KEEL_STACK_POSTGRES (default
        postgresql://postgres@127.0.0.1:5432; "sqlite" for none; a password in it reaches only
        the servers, through their 0600 env files), KEEL_STACK_DB_PREFIX (keel),
        KEEL_STACK_PREFECT_PORT (4200), KEEL_STACK_MLFLOW_PORT (5000; 0 = any free port),
        KEEL_STACK_HEARTBEAT (30 s), KEEL_STACK_CRASH_AFTER (90 s without a heartbeat marks a
        run crashed), KEEL_STACK_POLL (5 s between a worker's polls), KEEL_STACK_LANDING
        (data/landing/incoming, the folder the watcher watches) and KEEL_STACK_WATCH_DATASET
        (conf/datasets/sign-mnist.yaml, the dataset its files belong to)."""
        env = os.environ
        values = dict(
            stack_dir=Path(env.get("KEEL_STACK_DIR") or settings.home() / ".keel-stack"),
            postgres=env.get("KEEL_STACK_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
            db_prefix=env.get("KEEL_STACK_DB_PREFIX", "keel"),
            prefect_port=int(env.get("KEEL_STACK_PREFECT_PORT", 4200)),
            mlflow_port=int(env.get("KEEL_STACK_MLFLOW_PORT", 5000)),
            heartbeat_seconds=int(env.get("KEEL_STACK_HEARTBEAT", 30)),
            crash_after_seconds=int(env.get("KEEL_STACK_CRASH_AFTER", 90)),
            poll_seconds=int(env.get("KEEL_STACK_POLL", 5)),
            landing=env.get("KEEL_STACK_LANDING", "data/landing/incoming"),
            watch_dataset=env.get("KEEL_STACK_WATCH_DATASET", "conf/datasets/sign-mnist.yaml"),
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class Service:
    """One process the stack started."""

    name: str
    argv: list[str]
    log: str
    env: dict = field(default_factory=dict)  # added to the inherited environment (None: removed)
    # 0600 KEY=value files whose values are added too (before `env`): secrets stay out of stack.json.
    env_files: list[str] = field(default_factory=list)
    pid: int | None = None
    start_time: int | None = None  # kernel start time (clock ticks since boot): tells a reused pid apart
    health: str | None = None


@dataclass
class Stack:
    settings: StackSettings
    database: str = ""  # "postgresql" or "sqlite"
    prefect_api_url: str = ""
    mlflow_url: str = ""
    services: list[Service] = field(default_factory=list)
    started_at: float = 0.0
    seconds_to_ready: float = 0.0

    @property
    def state_file(self) -> Path:
        return self.settings.stack_dir / "stack.json"

    @property
    def credentials_file(self) -> Path:
        return self.settings.stack_dir / CREDENTIALS_FILE

    def credentials(self) -> dict[str, str]:
        """The client credentials of this stack (MLflow user and password, Prefect auth string),
        from credentials.env: generated by the first `up`, reused by the next ones."""
        return stack_credentials(self.settings.stack_dir)

    # ----------------------------------------------------------------- lifecycle

    def up(self) -> Stack:
        """Starts everything; on any failure stops what it had started and raises."""
        if self.state_file.exists():
            running = Stack.load(self.settings.stack_dir)
            if any(alive(s) for s in running.services):
                raise KeelError(f"a stack is already running from {self.settings.stack_dir} "
                                f"(Prefect {running.prefect_api_url}); `keel stack down` stops it")
            self.state_file.unlink()
        self.started_at = time.time()
        started = time.perf_counter()
        (self.settings.stack_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            prefect_db, mlflow_db = self._databases()
            prefect_port = self.settings.prefect_port or free_port()
            mlflow_port = self.settings.mlflow_port or free_port()
            for port in (prefect_port, mlflow_port):
                if port_in_use(port):
                    raise KeelError(f"port {port} is taken; set KEEL_STACK_PREFECT_PORT / KEEL_STACK_MLFLOW_PORT "
                                    "(0 picks a free port) or stop what uses it")
            self.prefect_api_url = f"http://127.0.0.1:{prefect_port}/api"
            self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            credentials = self.credentials()
            self._start(self._prefect_server(prefect_db, prefect_port))
            self._start(self._mlflow_server(mlflow_db, mlflow_port))
            for service in self.services:
                wait_healthy(service, timeout=180)
            check_mlflow_credentials(self.mlflow_url, credentials, self.credentials_file,
                                     self.settings.stack_dir / MLFLOW_AUTH_DB)
            self._create_pools_and_automation()
            for pool in POOLS:
                self._start(self._worker(pool))
            self._wait_for_workers(timeout=120)
            if self.settings.deploy:
                self.deploy()
                self._start(self._watcher())
        except BaseException:
            self.down()
            raise
        self.seconds_to_ready = time.perf_counter() - started
        self._save()
        return self

    def down(self, timeout: float = 20.0) -> list[str]:
        """Stops the recorded processes (newest first) and everything they started; returns
        what it stopped. A pid that now belongs to another process is left alone."""
        stopped = []
        for service in reversed(self.services):
            if stop(service, timeout):
                stopped.append(service.name)
        self.services = []
        self.state_file.unlink(missing_ok=True)
        return stopped

    @classmethod
    def load(cls, stack_dir: Path) -> Stack:
        path = Path(stack_dir) / "stack.json"
        if not path.exists():
            raise KeelError(f"no stack recorded in {stack_dir}; `keel stack up` starts one")
        doc = json.loads(path.read_text())
        stack = cls(StackSettings(**{**doc["settings"], "stack_dir": Path(doc["settings"]["stack_dir"])}))
        for key in ("database", "prefect_api_url", "mlflow_url", "started_at", "seconds_to_ready"):
            setattr(stack, key, doc[key])
        stack.services = [Service(**s) for s in doc["services"]]
        return stack

    def _save(self) -> None:
        # No secret in here: the PostgreSQL URL's password is masked, the servers' secrets are
        # in their env files, and the credentials in credentials.env.
        recorded = {**asdict(self.settings), "stack_dir": str(self.settings.stack_dir),
                    "postgres": redact(self.settings.postgres)}
        doc = {"settings": recorded,
               "database": self.database, "prefect_api_url": self.prefect_api_url, "mlflow_url": self.mlflow_url,
               "started_at": self.started_at, "seconds_to_ready": self.seconds_to_ready,
               "services": [asdict(s) for s in self.services]}
        with atomic_path(self.state_file) as tmp:
            tmp.write_text(json.dumps(doc, indent=2))

    # ----------------------------------------------------------------- pieces

    def client_env(self) -> dict[str, str]:
        """The environment that points Keel (and Prefect and MLflow clients) at this stack; the
        credentials they also need are in `credentials()` (credentials.env)."""
        return {"PREFECT_API_URL": self.prefect_api_url, "MLFLOW_TRACKING_URI": self.mlflow_url}

    def _client_process_env(self) -> dict:
        """What a client process (worker, watcher, `prefect deploy`) gets on top of the inherited
        environment: the servers' addresses, and none of the servers' secrets. An inherited
        variable that holds the PostgreSQL password (KEEL_STACK_POSTGRES...) is removed."""
        env: dict = {**self._base_env(), **self.client_env(), **dict.fromkeys(SERVER_ONLY_ENV)}
        for secret in _url_passwords(self.settings.postgres):
            env.update({k: None for k, v in os.environ.items() if secret in v and k not in env})
        return env

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def restart(self, name: str) -> Service:
        """Starts a stopped service again with its recorded command (the same port and store)."""
        old = self.service(name)
        stop(old)
        new = Service(old.name, old.argv, old.log, old.env, list(old.env_files), health=old.health)
        self.services[self.services.index(old)] = new
        spawn(new)
        if new.health:
            wait_healthy(new, timeout=180)
        self._save()
        return new

    def _start(self, service: Service) -> None:
        spawn(service)
        self.services.append(service)
        self._save()  # recorded at once, so `down` finds it even if `up` dies later

    def _databases(self) -> tuple[str, str]:
        """SQLAlchemy URLs for Prefect (asyncpg) and MLflow (psycopg2); the databases are
        created when missing."""
        names = (f"{self.settings.db_prefix}_prefect", f"{self.settings.db_prefix}_mlflow")
        if self.settings.postgres != "sqlite" and postgres_reachable(self.settings.postgres):
            for name in names:
                create_database(self.settings.postgres, name)
            self.database = "postgresql"
            base = urllib.parse.urlsplit(self.settings.postgres)
            netloc = base.netloc
            return (f"postgresql+asyncpg://{netloc}/{names[0]}", f"postgresql+psycopg2://{netloc}/{names[1]}")
        self.database = "sqlite"
        folder = self.settings.stack_dir
        return (f"sqlite+aiosqlite:///{folder / 'prefect.db'}", f"sqlite:///{folder / 'mlflow.db'}")

    def _base_env(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.settings.stack_dir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "GX_ANALYTICS_ENABLED": "false",
        }

    def _log(self, name: str) -> str:
        return str(self.settings.stack_dir / "logs" / f"{name}.log")

    def _prefect_server(self, database_url: str, port: int) -> Service:
        # The database URL and the auth string the API requires come from a 0600 env file.
        secrets_file = self.settings.stack_dir / PREFECT_SERVER_ENV
        write_env_file(secrets_file, {
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_API_AUTH_STRING": self.credentials()["PREFECT_API_AUTH_STRING"],
        }, "The Prefect server's database URL and auth string (keel stack up writes it on each start).")
        env = {**self._base_env(), "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_API_URL": None}
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        return Service("prefect-server", argv, self._log("prefect-server"), env, [str(secrets_file)],
                       health=f"http://127.0.0.1:{port}/api/health")

    def _mlflow_server(self, database_url: str, port: int) -> Service:
        """MLflow's basic-auth app: its users live in a SQLite file in the stack folder; the admin
        user (the stack's client credentials) is created on first start. The backend store URL
        reaches `mlflow server` as MLFLOW_BACKEND_STORE_URI, from a 0600 env file."""
        folder = self.settings.stack_dir
        artifacts = folder / "mlflow-artifacts"
        auth_ini = folder / MLFLOW_AUTH_INI
        auth_db = f"sqlite:///{folder / MLFLOW_AUTH_DB}".replace("%", "%%")  # configparser escapes %
        with atomic_path(auth_ini) as tmp:
            tmp.write_text("# MLflow's basic-auth app (keel stack up writes it on each start); the admin user's\n"
                           "# name and password come from the environment, see mlflow-server.env.\n"
                           f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                           # Checking a password costs ~0.2 s of CPU (scrypt), and a training run
                           # makes hundreds of requests: remember a checked one. With one worker
                           # a password changed through MLflow's API takes effect at once.
                           "auth_cache_ttl_seconds = 300\n")
        # The users' password hashes: readable by the owner only (SQLite keeps the file's mode).
        users = folder / MLFLOW_AUTH_DB
        os.close(os.open(users, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(users, 0o600)
        secrets_file = folder / MLFLOW_SERVER_ENV
        previous = read_env_file(secrets_file) if secrets_file.exists() else {}
        credentials = self.credentials()
        write_env_file(secrets_file, {
            "MLFLOW_BACKEND_STORE_URI": database_url,
            "MLFLOW_AUTH_ADMIN_USERNAME": credentials["MLFLOW_TRACKING_USERNAME"],
            "MLFLOW_AUTH_ADMIN_PASSWORD": credentials["MLFLOW_TRACKING_PASSWORD"],
            # Signs the UI's CSRF tokens; kept across starts.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": previous.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or token_urlsafe(32),
        }, "The MLflow server's database URL, admin user and CSRF key (keel stack up writes it on each start).")
        argv = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",  # one: see auth_cache_ttl_seconds
                "--serve-artifacts", "--artifacts-destination", str(artifacts)]
        # Job execution off: the default server also runs a job runner (~2.4 GB in all).
        env = {**self._base_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini)}
        return Service("mlflow-server", argv, self._log("mlflow-server"), env, [str(secrets_file)],
                       health=f"http://127.0.0.1:{port}/health")

    def _worker(self, pool: str) -> Service:
        env = {
            **self._client_process_env(),
            "KEEL_HOME": str(settings.home()), "KEEL_PROJECT_DIR": str(PROJECT_DIR),
            # Heartbeats let the server's automation mark a run whose machine died as crashed.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(self.settings.heartbeat_seconds),
            "PREFECT_WORKER_QUERY_SECONDS": str(self.settings.poll_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(self.settings.poll_seconds),
        }
        if pool == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # CPU work stays off the GPU the training worker owns
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                "--name", f"keel-{pool}-{socket.gethostname()}"]
        return Service(f"worker-{pool}", argv, self._log(f"worker-{pool}"), env, [str(self.credentials_file)])

    def _create_pools_and_automation(self) -> None:
        provision(self.prefect_api_url, self.settings.crash_after_seconds,
                  self.credentials()["PREFECT_API_AUTH_STRING"])

    def _wait_for_workers(self, timeout: float) -> None:
        from prefect.client.schemas.objects import WorkerStatus

        deadline = time.monotonic() + timeout
        with prefect_client(self.prefect_api_url, self.credentials()["PREFECT_API_AUTH_STRING"]) as client:
            for pool in POOLS:
                worker = self.service(f"worker-{pool}")
                while True:
                    if not alive(worker):
                        raise KeelError(f"the {pool} worker exited; see {worker.log}")
                    if any(w.status == WorkerStatus.ONLINE for w in client.read_workers_for_work_pool(pool)):
                        break
                    if time.monotonic() > deadline:
                        raise KeelError(f"no {pool} worker came online within {timeout:.0f} s; see {worker.log}")
                    time.sleep(0.5)

    def deploy(self) -> None:
        """`prefect deploy --all` from the project's prefect.yaml, against this stack."""
        deploy_project({**self._client_process_env(), **self.credentials()}, Path(self._log("deploy")))

    def _watcher(self) -> Service:
        argv = [str(Path(sys.executable).parent / "keel"), "watch", "--landing", self.settings.landing,
                "--dataset-config", self.settings.watch_dataset]
        env = {**self._client_process_env(), "KEEL_HOME": str(settings.home())}
        return Service("watcher", argv, self._log("watcher"), env, [str(self.credentials_file)])

    def describe(self) -> str:
        """Addresses, processes and where the credentials are (never the credentials)."""
        prefect_ui = self.prefect_api_url.removesuffix("/api")
        lines = [f"Keel stack ({self.database}) ready in {self.seconds_to_ready:.1f} s; state in {self.state_file}",
                 f"  Prefect UI   {prefect_ui}", f"  MLflow UI    {self.mlflow_url}",
                 f"  credentials  {self.credentials_file} (readable by you only: the MLflow user and "
                 "password, and PREFECT_API_AUTH_STRING, which the Prefect UI asks for)"]
        lines += [f"  {s.name:14} pid {s.pid:<7} log {s.log}" for s in self.services]
        lines += ["Point keel (or a worker on another machine) at it:",
                  *(f"  export {k}={v}" for k, v in self.client_env().items()),
                  f"  set -a; . {self.credentials_file}; set +a",
                  "`keel stack down` stops exactly these processes."]
        return "\n".join(lines)


# --------------------------------------------------------------------------- Prefect objects


def provision(api_url: str, crash_after_seconds: int, auth_string: str | None = None) -> None:
    """The work pools and the crash-detection automation on the Prefect server at `api_url`
    (`auth_string`: its PREFECT_API_AUTH_STRING; None: the one Prefect's settings hold)."""
    with prefect_client(api_url, auth_string) as client:  # also points Prefect's own API calls at api_url
        create_pools(client)
        create_crash_automation(crash_after_seconds)


def deploy_project(env: dict[str, str], log: Path | None = None) -> None:
    """Runs `prefect --no-prompt deploy --all` on the project's prefect.yaml with `env` added
    to the environment (PREFECT_API_URL names the server; a None value removes a variable)."""
    env = {**os.environ, "KEEL_PROJECT_DIR": str(PROJECT_DIR), **env}
    env = {k: v for k, v in env.items() if v is not None}
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    if log is None:
        done = subprocess.run(command, cwd=PROJECT_DIR, env=env, timeout=300, check=False)
    else:
        with open(log, "ab") as handle:
            done = subprocess.run(command, cwd=PROJECT_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=300, check=False)
    if done.returncode != 0:
        raise KeelError(f"prefect deploy --all failed (exit {done.returncode})" + (f"; see {log}" if log else ""))


def prefect_client(api_url: str, auth_string: str | None = None):
    """A synchronous Prefect client for `api_url` (with `auth_string` when given)."""
    import contextlib

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: api_url}
    if auth_string is not None:
        updates[PREFECT_API_AUTH_STRING] = auth_string

    @contextlib.contextmanager
    def opened():
        with temporary_settings(updates=updates):
            with get_client(sync_client=True) as client:
                yield client

    return opened()


def create_pools(client) -> None:
    """The `process` work pools with their concurrency limits (updated when they exist)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    for name, limit in POOLS.items():
        try:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", concurrency_limit=limit,
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="Keel training (one run per GPU)" if name == "gpu" else "Keel scoring and validation"))
        except ObjectAlreadyExists:
            client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit))


def create_crash_automation(crash_after_seconds: int) -> None:
    """Marks a flow run crashed when its heartbeats stop (its worker or machine died), as
    Prefect's zombie-flow guide describes; replaces an older copy."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=CRASH_AUTOMATION).delete()
    except ValueError:
        pass
    Automation(
        name=CRASH_AUTOMATION,
        description="A flow run that stops sending heartbeats lost its process: mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {crash_after_seconds} s: its worker or machine died")],
    ).create()


# --------------------------------------------------------------------------- processes


def service_environment(service: Service) -> dict[str, str]:
    """The environment `service` runs with: the inherited one, the values of its env files,
    then its own `env` (None there means: not inherited)."""
    env = dict(os.environ)
    for path in service.env_files:
        env.update(read_env_file(Path(path)))
    env.update(service.env)
    return {k: v for k, v in env.items() if v is not None}


def spawn(service: Service) -> None:
    env = service_environment(service)
    Path(service.log).parent.mkdir(parents=True, exist_ok=True)
    with open(service.log, "ab") as log:
        # A new session per service: its process group holds it and what it forks.
        process = subprocess.Popen(service.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=PROJECT_DIR)
    service.pid = process.pid
    service.start_time = start_time_of(process.pid)


def start_time_of(pid: int) -> int | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(service: Service) -> bool:
    """True while the recorded process runs (the same process, not a reused pid)."""
    if service.pid is None:
        return False
    try:
        state = Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and start_time_of(service.pid) == service.start_time


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def stop(service: Service, timeout: float = 20.0) -> bool:
    """SIGTERM to the service's process group and to its descendants in other groups (a
    worker's flow runs get their own session), then SIGKILL after `timeout`. Returns False
    when the recorded process was already gone."""
    if not alive(service):
        return False
    pid = service.pid
    others = [p for p in descendants(pid) if _pgid(p) not in (None, pid)]
    _signal_group(pid, signal.SIGTERM)
    for p in others:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (_group_alive(pid) or any(_pid_alive(p) for p in others)):
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    for p in others:
        _signal(p, signal.SIGKILL)
    _reap(pid)
    return True


def kill_hard(service: Service) -> None:
    """SIGKILL the service and everything it started, at once: a machine that dies."""
    others = descendants(service.pid)
    _signal_group(service.pid, signal.SIGKILL)
    for p in others:
        _signal(p, signal.SIGKILL)
    _reap(service.pid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Zombies still count for killpg: check that a live member remains.
    return any(_pid_alive(p) and _pgid(p) == pgid for p in [pgid, *descendants(pgid)])


def _reap(pid: int) -> None:
    """Collects the exit status when we are the parent (tests start stacks in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- credentials


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
    read or write: written to a 0600 temporary beside it (keel.core.io.atomic_path) and renamed into place."""
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
        os.chmod(tmp, 0o600)  # atomic_path creates it so already; this says it where it matters
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


def _url_passwords(url: str) -> list[str]:
    """The password of `url`, as written and percent-decoded (none: [])."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return sorted({password, urllib.parse.unquote(password)}) if password else []


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(service: Service, timeout: float) -> None:
    from flows.prefect_api import wait_for_health

    try:
        wait_for_health(service.health, lambda: alive(service), timeout)
    except RuntimeError as exc:
        raise KeelError(f"{service.name}: {exc}; see {service.log}") from None


def postgres_reachable(server_url: str) -> bool:
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def create_database(server_url: str, name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def drop_database(server_url: str, name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(_dsn(server_url, "postgres"), connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


def _dsn(server_url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(("postgresql", parts.netloc, f"/{database}", parts.query, ""))

