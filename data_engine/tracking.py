"""The one place that talks to MLflow.

A pipeline run is a parent run and each job a child run; jobs started by the pipeline find their
parent through the `SAILYARD_PARENT_RUN_ID` environment variable, so a job launched by
`spark-submit` in another process still nests under it. Without `MLFLOW_TRACKING_URI` the store is
a SQLite file plus an artifact folder inside the work directory, so a demo needs no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PARENT_ENV = "SAILYARD_PARENT_RUN_ID"
EXPERIMENT_ENV = "SAILYARD_EXPERIMENT"
DEFAULT_EXPERIMENT = "sailyard"
_PARAM_MAX = 6000  # MLflow rejects longer param values
# What the experiment holds: runs with metrics, not GenAI traces. MLflow's UI reads this tag to pick
# the experiment's view when its workflow switch is off; MLflow 3.17's UI has the switch on and
# follows the `workflowType` URL parameter instead (`UI_QUERY`), so the URLs below carry both.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_QUERY = "workflowType=machine_learning"


def tracking_uri(work_dir: str | Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<work_dir>/mlflow/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = Path(work_dir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def artifact_location(work_dir: str | Path) -> str:
    return (Path(work_dir).resolve() / "mlflow" / "artifacts").as_uri()


def git_commit() -> str | None:
    """The commit of the sailyard checkout this code runs from, when it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → `a.b.c` keys with string values, as MLflow params want them."""
    flat: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
            flat[name] = text[:_PARAM_MAX]
    return flat


@dataclass
class Run:
    """An open MLflow run and the lineage a job records in it."""

    client: Any
    run_id: str
    experiment_id: str
    tables_read: dict[str, int] = field(default_factory=dict)
    tables_written: dict[str, int] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(flatten(params).items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in sorted(metrics.items()) if v is not None]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start:start + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:_PARAM_MAX]) for k, v in sorted(tags.items()) if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def table_read(self, name: str, path: str | Path, version: int) -> None:
        self.tables_read[name] = version
        self.set_tags({f"table.read.{name}": f"{_location(path)}@v{version}"})

    def table_written(self, name: str, path: str | Path, version: int) -> None:
        self.tables_written[name] = version
        self.set_tags({f"table.written.{name}": f"{_location(path)}@v{version}"})

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store: two jobs started together on a new work dir would
    both run MLflow's schema migration, and the second fails ("table … already exists")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(uri[len("sqlite:///"):] + ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _location(path: str | Path) -> str:
    """A table's location for lineage tags: a local path resolved, a remote URI as it is."""
    return str(path) if "://" in str(path) else str(Path(path).resolve())


def _experiment_id(client: Any, work_dir: str | Path) -> str:
    """The experiment's id, created on first use; a store made before the kind tag existed gets it
    here, so its experiment too opens on runs in the UI."""
    name = os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(work_dir),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:  # a user's own choice of kind is left alone
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def experiment(work_dir: str | Path) -> str:
    """The id of this work dir's experiment, created (or given its kind) if need be: what the UI opens."""
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter on first use
    uri = tracking_uri(work_dir)
    with _store_lock(uri):
        return _experiment_id(MlflowClient(tracking_uri=uri, registry_uri=uri), work_dir)


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI: `<base>/#/experiments/<id>/runs?workflowType=…`.
    Without the parameter MLflow 3.17 opens every experiment on its GenAI traces overview."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_QUERY}"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI (metrics, params, tags, artifacts), in the model-training view:
    `<base>/#/experiments/<id>/runs/<run id>?workflowType=machine_learning`."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"


@contextmanager
def start_run(name: str, *, work_dir: str | Path, kind: str = "job",
              params: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None) -> Iterator[Run]:
    """Open a run named `name`; nested under `parent_run_id` or `$SAILYARD_PARENT_RUN_ID`.

    The run ends FINISHED when the block exits normally and FAILED when it raises.
    """
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter on first use
    uri = tracking_uri(work_dir)
    with _store_lock(uri):  # the client creates (migrates) the store's tables on first use
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = _experiment_id(client, work_dir)
    parent = parent_run_id or os.environ.get(PARENT_ENV) or None
    tags = {"sailyard.kind": kind, "sailyard.job": name, "mlflow.runName": name}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    if parent:
        tags["mlflow.parentRunId"] = parent
    mlrun = client.create_run(experiment_id, run_name=name, tags=tags)
    run = Run(client=client, run_id=mlrun.info.run_id, experiment_id=experiment_id)
    if params:
        run.log_params(params)
    started = time.time()
    try:
        yield run
    except BaseException:
        try:
            client.set_terminated(run.run_id, status="FAILED")
        except Exception as exc:  # e.g. the store is locked: the job's own error is what to report
            print(f"sailyard: could not mark MLflow run {run.run_id} FAILED: {' '.join(str(exc).split())[:200]}",
                  file=sys.stderr, flush=True)
        raise
    run.log_metrics({"seconds": round(time.time() - started, 3)})
    client.set_terminated(run.run_id, status="FINISHED")


@contextmanager
def reopen_run(run_id: str, *, work_dir: str | Path) -> Iterator[Run]:
    """Continue run `run_id` (a resumed sweep): RUNNING while the block runs, then FINISHED, or FAILED
    when it raises, like `start_run`.

    Raises:
        SailyardError: the store does not hold the run.
    """
    import logging

    from mlflow.tracking import MlflowClient

    from data_engine.errors import SailyardError

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri(work_dir)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        info = client.get_run(run_id).info
    except Exception as exc:
        raise SailyardError(f"MLflow store {uri} holds no run {run_id}: {str(exc).splitlines()[0][:200]}") from exc
    client.update_run(run_id, status="RUNNING")
    run = Run(client=client, run_id=run_id, experiment_id=info.experiment_id)
    started = time.time()
    try:
        yield run
    except BaseException:
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception as exc:
            print(f"sailyard: could not mark MLflow run {run_id} FAILED: {' '.join(str(exc).split())[:200]}",
                  file=sys.stderr, flush=True)
        raise
    run.log_metrics({"seconds": round(time.time() - started, 3)})
    client.set_terminated(run_id, status="FINISHED")


def record_run(parent: Run, name: str, *, kind: str, params: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None, tags: Mapping[str, Any] | None = None,
               start_time: float | None = None) -> str:
    """A FINISHED child run of `parent` for work done elsewhere (a worker process that never talks to
    MLflow), written in one go; `start_time` (epoch seconds) is when that work began. Returns its id."""
    all_tags = {"sailyard.kind": kind, "sailyard.job": name, "mlflow.runName": name,
                "mlflow.parentRunId": parent.run_id, **{k: str(v) for k, v in (tags or {}).items()}}
    commit = git_commit()
    if commit:
        all_tags["git_commit"] = commit
    mlrun = parent.client.create_run(parent.experiment_id, run_name=name, tags=all_tags,
                                     start_time=int((start_time or time.time()) * 1000))
    child = Run(client=parent.client, run_id=mlrun.info.run_id, experiment_id=parent.experiment_id)
    if params:
        child.log_params(params)
    if metrics:
        child.log_metrics(metrics)
    parent.client.set_terminated(child.run_id, status="FINISHED")
    return child.run_id


def child_runs(work_dir: str | Path, parent_run_id: str) -> list[Any]:
    """Every (not deleted) run nested under `parent_run_id`, as `mlflow.entities.Run`s, oldest first."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(work_dir)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def find_runs(work_dir: str | Path, tags: Mapping[str, str]) -> list[str]:
    """Ids of the (not deleted) runs of this work dir's experiment carrying all of `tags`, oldest first."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(work_dir)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = _experiment_id(client, work_dir)
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])
    return [r.info.run_id for r in runs]


def write_temp_json(obj: Any, name: str) -> Path:
    """A JSON file in a fresh temp dir, for artifacts that must keep a chosen file name."""
    path = Path(tempfile.mkdtemp(prefix="sailyard-")) / name
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def work_dir_for(lake: str | Path) -> Path:
    """Jobs given only `--lake` keep their MLflow store beside it: `<lake>/../mlflow`."""
    return Path(lake).expanduser().resolve().parent


# --------------------------------------------------------------------------- model registry


def register(run: Run, name: str, artifact_path: str, *, tags: Mapping[str, Any] | None = None) -> int:
    """Register the run's artifact folder `artifact_path` as a new version of model `name`."""
    client = run.client
    try:
        client.create_registered_model(name)
    except Exception:  # already registered: one of several runs registering versions
        if client.get_registered_model(name) is None:
            raise
    source = f"{client.get_run(run.run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(name, source=source, run_id=run.run_id,
                                          tags={k: str(v) for k, v in (tags or {}).items()})
    return int(version.version)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    source: str
    run_id: str


def _registry_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _registry_error(uri: str, what: str, exc: Exception) -> Exception:
    """A registry failure as one line a user can act on (the store, what was asked, MLflow's first line)."""
    from data_engine.errors import SailyardError

    first = next((x.strip() for x in str(exc).splitlines() if x.strip()), type(exc).__name__)
    return SailyardError(f"model registry {uri} could not be read ({what}): {first}")


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def latest_version(work_dir: str | Path, name: str) -> ModelVersion | None:
    """The highest version of registered model `name`; None only when the registry says it has
    none (the name is not registered, or has no versions).

    Raises:
        SailyardError: the registry could not be read (a locked or broken store, …): that is not
            "no model", and a job must not carry on as if it were.
    """
    uri = tracking_uri(work_dir)
    try:
        versions = _registry_client(uri).search_model_versions(f"name = '{name}'")
    except Exception as exc:
        if _not_found(exc):
            return None
        raise _registry_error(uri, f"versions of {name}", exc) from exc
    if not versions:
        return None
    best = max(versions, key=lambda v: int(v.version))
    return ModelVersion(name, int(best.version), best.source, best.run_id)


def model_version(work_dir: str | Path, name: str, version: int) -> ModelVersion | None:
    """Version `version` of registered model `name`; None when the registry has no such version.

    Raises:
        SailyardError: the registry could not be read.
    """
    uri = tracking_uri(work_dir)
    try:
        found = _registry_client(uri).get_model_version(name, str(version))
    except Exception as exc:
        if _not_found(exc):
            return None
        raise _registry_error(uri, f"{name} version {version}", exc) from exc
    return ModelVersion(name, int(found.version), found.source, found.run_id)


def download(work_dir: str | Path, model: ModelVersion, dst: str | Path) -> Path:
    """The files of a model version, in a local folder.

    Raises:
        SailyardError: the artifacts could not be fetched (store unreadable, files gone).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file floods job logs
    import mlflow

    # Never mlflow.set_tracking_uri: it also exports MLFLOW_TRACKING_URI, which would point every
    # later job of this process (and its children) at this store.
    uri = tracking_uri(work_dir)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model.source, dst_path=str(dst),
                                                        tracking_uri=uri, registry_uri=uri))
    except Exception as exc:
        raise _registry_error(uri, f"files of {model.name}/{model.version} at {model.source}", exc) from exc
