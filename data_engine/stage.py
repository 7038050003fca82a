"""One way every stage commits: counts checked first, tables committed as one set, one summary.

A stage is a function that reads pinned inputs and returns a `StagePlan`: the DataFrames it wants
written (each with the row count the stage computed for it), its counts (`in = kept + dropped +
quarantined`, per language), and whatever else its summary says. `run_stage` does the rest, the
same for every stage:

1. the counts reconcile, or nothing is written;
2. every output's files are written and verified (`lake.stage_write`): they must hold exactly the
   rows the stage counted, or nothing is committed;
3. the outputs are committed one after another, every commit carrying the stage, the run id and
   the names of the set (`sailyard.stage`, `sailyard.run`, `sailyard.set`);
4. the tables read and written go to MLflow, and the JSON summary comes back.

Delta has no multi-table transaction, so a kill between two commits of step 3 can leave, say,
`docs_dedup` of one run and the dedup partitions of `drops` of another. `set_consistency` finds
that from the commit metadata alone; a stage whose input set is broken refuses to run, and
re-running the interrupted stage (idempotent: it replaces what it owns) repairs it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data_engine import lake
from data_engine.errors import SailyardError
from data_engine.spark import phase

STAGE_KEY = "sailyard.stage"
RUN_KEY = "sailyard.run"
SET_KEY = "sailyard.set"
_HISTORY_DEPTH = 500  # commits searched for a stage's latest commit to a shared table


class ReconcileError(SailyardError):
    """A stage's counts do not add up; nothing was committed."""


class InconsistentSetError(SailyardError):
    """A stage's tables come from different runs (it was interrupted between commits)."""


@dataclass(frozen=True)
class Output:
    """One table a stage writes, and the rows it must hold."""

    table: str
    df: Any
    rows: int | None  # counted by the stage before writing; None only for tables it cannot count
    mode: str = "overwrite"
    partition_by: Sequence[str] = ("lang",)
    replace_partitions: Mapping[str, Any] | None = None
    sort_by: Sequence[str] = ("doc_id",)
    base_version: Any = lake.UNSET
    app_id: str | None = None
    app_version: int | None = None
    gate: bool = False  # already committed by another run of the same input: commit nothing more


class AlreadyCommitted(SailyardError):
    """A gate output's idempotency key was committed by another run; this run added nothing."""


@dataclass
class Counts:
    records: int = 0
    kept: int = 0
    dropped: int = 0
    quarantined: int = 0
    by_lang: dict[str, dict[str, int]] = field(default_factory=dict)  # lang → {in, kept, dropped}

    def add(self, lang: str, key: str, n: int) -> None:
        entry = self.by_lang.setdefault(lang, {"in": 0, "kept": 0, "dropped": 0})
        entry["in"] += n
        entry[key] = entry.get(key, 0) + n
        self.records += n
        setattr(self, key, getattr(self, key) + n)

    def check(self, stage: str) -> None:
        if self.records != self.kept + self.dropped + self.quarantined:
            raise ReconcileError(f"{stage}: counts do not reconcile: in {self.records} != kept {self.kept} "
                                 f"+ dropped {self.dropped} + quarantined {self.quarantined}; nothing "
                                 "was committed")
        for lang, c in self.by_lang.items():
            if c["in"] != c.get("kept", 0) + c.get("dropped", 0) + c.get("quarantined", 0):
                raise ReconcileError(f"{stage}: counts of {lang} do not reconcile: {c}; nothing was "
                                     "committed")


@dataclass
class StagePlan:
    """What a stage's function returns: its outputs, counts and summary, nothing committed yet."""

    stage: str
    inputs: dict[str, int]  # table → version read
    outputs: list[Output]
    counts: Counts
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    release: Callable[[], None] | None = None  # frees what the stage persisted, after the commits
    after_commit: Callable[[Any, dict[str, int]], None] | None = None  # (run, versions) → artifacts


def commit_plan(lake_dir: str, plan: StagePlan, *, run: Any = None) -> dict[str, int]:
    """Check, write, verify and commit a plan's outputs; returns table → committed version."""
    try:
        plan.counts.check(plan.stage)
        run_id = getattr(run, "run_id", None) or uuid.uuid4().hex
        tables = [o.table for o in plan.outputs]
        meta = {"job": plan.stage, STAGE_KEY: plan.stage, RUN_KEY: run_id,
                "mlflow_run_id": getattr(run, "run_id", ""),
                "input": ",".join(f"{t}@v{v}" for t, v in sorted(plan.inputs.items()))}
        if all(o.mode == "overwrite" for o in plan.outputs):
            # A set a run replaces as a whole. Appending stages (ingest) are kept whole by their
            # idempotency keys instead: their latest commits may rightly come from different runs.
            meta[SET_KEY] = ",".join(tables)
        staged: list[Any] = []
        try:
            for out in plan.outputs:
                with phase(out.df.sparkSession, f"{plan.stage}: write {out.table}"):
                    s = lake.stage_write(out.df, lake_dir, out.table, mode=out.mode,  # type: ignore[arg-type]
                                         partition_by=out.partition_by,
                                         replace_partitions=out.replace_partitions, sort_by=out.sort_by,
                                         app_id=out.app_id, app_version=out.app_version,
                                         base_version=out.base_version)
                staged.append(s)
                if out.gate and s.skipped:
                    raise AlreadyCommitted(f"{out.table} already holds {out.app_id}")
                if (out.rows is not None and not s.skipped and s.native_df is None
                        and s.rows != out.rows):
                    raise ReconcileError(f"{plan.stage}: {out.table} would get {s.rows} rows but the stage "
                                         f"counted {out.rows}; nothing was committed")
            versions: dict[str, int] = {}
            for out, s in zip(plan.outputs, staged, strict=True):
                done = lake.commit(s, metadata=meta)
                if out.gate and not done.committed:  # the other run got there while we wrote
                    raise AlreadyCommitted(f"{out.table} already holds {out.app_id}")
                if done.committed:
                    versions[s.name] = done.version
        except BaseException:
            for s in staged:
                lake.discard(s)
            raise
    finally:
        if plan.release is not None:
            plan.release()
    if run is not None:
        for name, version in plan.inputs.items():
            run.table_read(name, lake.table_path(lake_dir, name), version)
        for name, version in versions.items():
            run.table_written(name, lake.table_path(lake_dir, name), version)
    return versions


def run_stage(spark: Any, lake_dir: str, name: str, plan_fn: Callable[[Any], StagePlan], *,
              params: Mapping[str, Any] | None = None, kind: str = "job") -> dict[str, Any]:
    """Run one stage end to end inside its MLflow run; returns the job's summary fields."""
    from data_engine import tracking

    started = time.time()
    with tracking.start_run(name, work_dir=tracking.work_dir_for(lake_dir), kind=kind,
                            params=params) as run:
        plan = plan_fn(run)
        versions = commit_plan(lake_dir, plan, run=run)
        c = plan.counts
        metrics: dict[str, float] = {"in": c.records, "kept": c.kept, "dropped": c.dropped,
                                     "quarantined": c.quarantined}
        for lang, by in c.by_lang.items():
            metrics.update({f"{k}.{lang}": v for k, v in by.items()})
        metrics.update(plan.metrics)
        run.log_metrics(metrics)
        if plan.after_commit is not None:
            plan.after_commit(run, versions)
    return {"in": c.records, "kept": c.kept, "dropped": c.dropped, "quarantined": c.quarantined,
            "tables": versions, "tables_read": plan.inputs, "mlflow_run_id": run.run_id,
            **plan.summary, "stage_seconds": round(time.time() - started, 2)}


# --------------------------------------------------------------------------------------------
# Sets


@dataclass(frozen=True)
class SetState:
    stage: str
    run: str
    tables: dict[str, str | None]  # table → run id of the stage's latest commit to it (None: none)

    @property
    def consistent(self) -> bool:
        return all(r == self.run for r in self.tables.values())


def _latest_stage_commit(lake_dir: str, table: str, stage: str) -> dict[str, Any] | None:
    if not lake.exists(lake_dir, table):
        return None
    for entry in lake.history(lake_dir, table, limit=_HISTORY_DEPTH):
        if entry.get(STAGE_KEY) == stage:
            return entry
    return None


def set_state(lake_dir: str, table: str) -> SetState | None:
    """The set `table`'s latest commit belongs to, and which run each member last came from.

    None when the table's latest commit was not made by `run_stage` (older tables, other writers).
    """
    if not lake.exists(lake_dir, table):
        return None
    # The latest commit that changed data (vacuum's own commits carry no stage metadata).
    entries = [e for e in lake.history(lake_dir, table, limit=16)
               if e.get("operation") not in lake.MAINTENANCE_OPERATIONS]
    if not entries:
        return None
    latest = entries[0]
    stage, run, members = latest.get(STAGE_KEY), latest.get(RUN_KEY), latest.get(SET_KEY)
    if not (stage and run and members):
        return None
    tables = {}
    for member in str(members).split(","):
        entry = latest if member == table else _latest_stage_commit(lake_dir, member, stage)
        tables[member] = entry.get(RUN_KEY) if entry else None
    return SetState(stage, run, tables)


def read_input(spark: Any, lake_dir: str, table: str, version: int | None = None) -> lake.Table:
    """A stage's input pinned at `version` (default: the latest, whose set must be whole — a pinned
    older version is the user's explicit choice)."""
    if version is None:
        require_consistent(lake_dir, table)
    return lake.read_table(spark, lake_dir, table, version=version)


def require_consistent(lake_dir: str, table: str) -> None:
    """Refuse to read `table` when its stage was interrupted between commits."""
    state = set_state(lake_dir, table)
    if state is not None and not state.consistent:
        stale = {t: r for t, r in state.tables.items() if r != state.run}
        raise InconsistentSetError(
            f"{table} comes from {state.stage} run {state.run}, but {', '.join(sorted(stale))} from "
            f"{json.dumps(stale)}: a {state.stage} run was interrupted between its commits; re-run "
            f"{state.stage} to repair the set")
