# The Keel image: the flows, their dependencies (PyTorch's CUDA build, which also runs on CPU),
# Prefect and MLflow. docker-compose.yml runs the workers, the watcher, the deploy job and the
# MLflow server from it.
#   make image    (docker build with the checkout's commit, see KEEL_GIT_COMMIT below)
#   docker run --rm keel:latest keel --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEEL_HOME=/opt/keel \
    KEEL_PROJECT_DIR=/opt/keel \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false

WORKDIR /opt/keel

# Flows run as `keel`. Named volumes mounted on data/, reports/, predictions/, .keel-watch/,
# /mlartifacts and /mlflow-auth (MLflow's users) take their ownership from these folders on
# first use, so they stay writable.
RUN useradd --create-home --uid 1000 keel \
    && mkdir -p /mlartifacts /mlflow-auth \
    && chown keel:keel /opt/keel /mlartifacts /mlflow-auth \
    && chmod 700 /mlflow-auth

# Dependencies first, against empty packages: a change to the code does not download them again.
COPY pyproject.toml README.md ./
RUN mkdir -p keel tasks flows cli ops \
    && touch keel/__init__.py tasks/__init__.py flows/__init__.py cli/__init__.py ops/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes keel \
    && rm -rf keel tasks flows cli ops build *.egg-info

# The packages, installed editable: the code runs from /opt/keel, where the deployments'
# entrypoints are, and ops.settings finds prefect.yaml next to its own package folder.
COPY --chown=keel:keel keel/ keel/
COPY --chown=keel:keel tasks/ tasks/
COPY --chown=keel:keel flows/ flows/
COPY --chown=keel:keel cli/ cli/
COPY --chown=keel:keel ops/ ops/
RUN pip install --no-cache-dir --no-deps --editable . \
    && rm -rf build

COPY --chown=keel:keel conf/ conf/
COPY --chown=keel:keel data/ data/
COPY --chown=keel:keel prefect.yaml ./
COPY --chown=keel:keel mlruns/.gitkeep mlruns/
# Folders that volumes are mounted on (the watcher's state in .keel-watch), owned by `keel`.
RUN mkdir -p data/landing/incoming data/landing/scoring reports predictions .keel-watch \
    && chown keel:keel data/landing data/landing/incoming data/landing/scoring reports predictions .keel-watch

# The commit the image is built from (.git stays out of it): models registered from the image
# are tagged with it (keel.tracking.client.git_commit). `make image` and `docker compose build`
# pass it (KEEL_GIT_COMMIT=$(git rev-parse HEAD) docker compose build); last, so that a new
# commit rebuilds only this layer.
ARG KEEL_GIT_COMMIT=unknown
ENV KEEL_GIT_COMMIT=${KEEL_GIT_COMMIT}

USER keel

CMD ["keel", "--help"]
