"""Read what a Spark application did from its event log: jobs, stages and every task's metrics.

Spark's UI shows skew and memory while an application runs; a test or a benchmark needs the same
figures after it ended, from outside the process. The event log has them. Write one with

    spark-submit --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file:///some/dir
                 --conf spark.eventLog.compress=false …

Spark 4 compresses event logs (zstd) by default; this reader takes plain JSON lines only, so it
needs no codec library, and says so when handed a compressed log. Rolling logs (a folder
`eventlog_v2_<app>/` of `events_<n>_<app>` files, Spark's default) and single files both work.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CODECS = ("zstd", "lz4", "lzf", "snappy")
_ROLLING_PREFIX = "eventlog_v2_"


@dataclass(frozen=True)
class Task:
    """One finished task attempt. Records are what it read: from files (input) and from other
    tasks (shuffle, local + remote), because either is the work a task was given. A read of a
    cached DataFrame counts cached batches, not rows (Spark's metric), so such stages look small."""

    task_id: int
    index: int
    attempt: int
    succeeded: bool
    duration_ms: int
    run_time_ms: int
    input_records: int
    input_bytes: int
    shuffle_read_records: int
    shuffle_read_bytes: int
    shuffle_write_records: int
    gc_time_ms: int
    peak_execution_memory: int

    @property
    def records_in(self) -> int:
        """The task's share of the stage's work: a skewed task reads many more of these."""
        return self.input_records + self.shuffle_read_records


@dataclass(frozen=True)
class Stage:
    """One attempt of a stage (a retried stage is two of these, each with its own tasks)."""

    stage_id: int
    attempt: int
    name: str
    num_tasks: int
    submitted_ms: int | None
    completed_ms: int | None
    tasks: tuple[Task, ...]

    @property
    def records_in(self) -> int:
        return sum(t.records_in for t in self.tasks if t.succeeded)


@dataclass(frozen=True)
class Job:
    """One action. `call_site` is the line of the driver program that started it (Python's own
    file:line under PySpark), which is how a stage is traced back to the code."""

    job_id: int
    submitted_ms: int | None
    completed_ms: int | None
    stage_ids: tuple[int, ...]
    call_site: str
    succeeded: bool
    description: str = ""
    """`spark.job.description` (set by `data_engine.spark.phase`): the pipeline phase it served."""


@dataclass(frozen=True)
class App:
    app_id: str
    name: str
    jobs: tuple[Job, ...]
    stages: tuple[Stage, ...]
    """Only stages that ran (a job lists the stages it could skip too; they have no tasks)."""
    longest_plan_chars: int = 0
    started_ms: int | None = None
    """Application start and end (wall clock, ms): before the first job is Spark's and the job's
    fixed cost."""
    ended_ms: int | None = None
    """The longest physical plan Spark described (at a query's start and at each adaptive
    re-plan). The driver builds and keeps these strings, so a plan that grows with every stage
    costs heap and time before any task runs; `spark.sql.maxPlanStringLength` caps them."""

    def job_of(self, stage_id: int) -> Job | None:
        """The first job that ran this stage: a shuffle stage reused by a later job counts once."""
        return next((j for j in self.jobs if stage_id in j.stage_ids), None)

    def call_site(self, stage: Stage) -> str:
        job = self.job_of(stage.stage_id)
        return job.call_site if job and job.call_site else stage.name


@dataclass(frozen=True)
class StageSkew:
    """How unevenly one stage's work was spread: the busiest task against the median task."""

    stage: Stage
    call_site: str
    max_records: int
    median_records: float

    @property
    def ratio(self) -> float:
        if self.median_records:
            return self.max_records / self.median_records
        return float("inf") if self.max_records else 1.0

    def __str__(self) -> str:
        return (f"stage {self.stage.stage_id}.{self.stage.attempt} ({self.call_site}): "
                f"{len(self.stage.tasks)} tasks, max {self.max_records} records, "
                f"median {self.median_records:g}, ratio {self.ratio:.1f}")


def read_events(path: str | Path) -> App:
    """Parse one application's event log: a file, a rolling-log folder, or an event-log
    directory holding exactly one application."""
    events = _events(_resolve(Path(path)))
    return _build(events)


def app_logs(log_dir: str | Path) -> list[Path]:
    """The application logs in an event-log directory (`spark.eventLog.dir`), oldest first."""
    entries = [p for p in Path(log_dir).iterdir() if not p.name.startswith(".")]
    return sorted(entries, key=lambda p: p.stat().st_mtime)


def stage_skews(app: App, *, min_tasks: int, min_records: int) -> list[StageSkew]:
    """max/median task input of every stage big enough for the figure to mean something: a stage
    of two tasks or of a few hundred rows is uneven without anything being wrong."""
    out = []
    for stage in app.stages:
        counts = [t.records_in for t in stage.tasks if t.succeeded]
        if len(counts) < min_tasks or sum(counts) < min_records:
            continue
        out.append(StageSkew(stage, app.call_site(stage), max(counts), statistics.median(counts)))
    return out


def skewed_stages(app: App, factor: float, min_tasks: int, min_records: int) -> list[StageSkew]:
    """The stages whose busiest task read more than `factor` × the median task's records: the
    ones that would hold up (or, with the data grown, kill) a job on a cluster."""
    return [s for s in stage_skews(app, min_tasks=min_tasks, min_records=min_records)
            if s.max_records > factor * s.median_records]


def _resolve(path: Path) -> list[Path]:
    """The files holding the log, in order (a rolling log is split across `events_<n>_` files)."""
    if path.is_dir() and not path.name.startswith(_ROLLING_PREFIX):
        logs = app_logs(path)
        if len(logs) != 1:
            raise ValueError(f"{path}: expected one application's event log, found {len(logs)} "
                             f"({', '.join(p.name for p in logs) or 'none'}); pass one of them")
        path = logs[0]
    if path.is_dir():
        parts = [p for p in path.iterdir() if p.name.startswith("events_")]
        if not parts:
            raise ValueError(f"{path}: a rolling event log without events_* files")
        files = sorted(parts, key=lambda p: int(re.match(r"events_(\d+)_", p.name).group(1)))
    else:
        files = [path]
    for f in files:
        _check_plain(f)
    return files


def _check_plain(path: Path) -> None:
    codec = next((c for c in _CODECS if path.name.removesuffix(".inprogress").endswith("." + c)), None)
    with path.open("rb") as fh:
        head = fh.read(1)
    if codec or (head and head != b"{"):
        raise ValueError(f"{path}: a compressed event log ({codec or 'unknown codec'}); this reader takes "
                         f"plain JSON lines: rerun with --conf spark.eventLog.compress=false")


def _events(files: list[Path]) -> Iterator[dict[str, Any]]:
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def _build(events: Iterator[dict[str, Any]]) -> App:
    app_id = name = ""
    jobs: dict[int, dict[str, Any]] = {}
    stages: dict[tuple[int, int], dict[str, Any]] = {}
    tasks: dict[tuple[int, int], list[Task]] = defaultdict(list)
    longest_plan = 0
    started = ended = None
    for e in events:
        kind = e["Event"]
        if "physicalPlanDescription" in e:  # SQL execution start, adaptive execution update
            longest_plan = max(longest_plan, len(e["physicalPlanDescription"] or ""))
        elif kind == "SparkListenerApplicationStart":
            app_id, name, started = e.get("App ID", ""), e.get("App Name", ""), e.get("Timestamp")
        elif kind == "SparkListenerApplicationEnd":
            ended = e.get("Timestamp")
        elif kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            jobs[e["Job ID"]] = {"submitted": e.get("Submission Time"), "stages": tuple(e["Stage IDs"]),
                                 "call_site": props.get("callSite.short", ""),
                                 "description": props.get("spark.job.description") or ""}
        elif kind == "SparkListenerJobEnd":
            jobs[e["Job ID"]].update(completed=e.get("Completion Time"),
                                     ok=e["Job Result"]["Result"] == "JobSucceeded")
        elif kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
            info = e["Stage Info"]
            stages[(info["Stage ID"], info["Stage Attempt ID"])] = info
        elif kind == "SparkListenerTaskEnd":
            tasks[(e["Stage ID"], e["Stage Attempt ID"])].append(_task(e))
    return App(
        app_id=app_id, name=name,
        jobs=tuple(Job(i, j["submitted"], j.get("completed"), j["stages"], j["call_site"], j.get("ok", False),
                       j["description"])
                   for i, j in sorted(jobs.items())),
        stages=tuple(Stage(sid, att, info["Stage Name"], info["Number of Tasks"], info.get("Submission Time"),
                           info.get("Completion Time"), tuple(sorted(tasks[(sid, att)], key=lambda t: t.index)))
                     for (sid, att), info in sorted(stages.items())),
        longest_plan_chars=longest_plan, started_ms=started, ended_ms=ended)


def _task(e: dict[str, Any]) -> Task:
    info, m = e["Task Info"], e.get("Task Metrics") or {}
    read, write, inp = (m.get("Shuffle Read Metrics") or {}, m.get("Shuffle Write Metrics") or {},
                        m.get("Input Metrics") or {})
    return Task(
        task_id=info["Task ID"], index=info["Index"], attempt=info["Attempt"],
        succeeded=e["Task End Reason"]["Reason"] == "Success",
        duration_ms=info["Finish Time"] - info["Launch Time"],
        run_time_ms=m.get("Executor Run Time", 0),
        input_records=inp.get("Records Read", 0), input_bytes=inp.get("Bytes Read", 0),
        shuffle_read_records=read.get("Total Records Read", 0),
        shuffle_read_bytes=read.get("Local Bytes Read", 0) + read.get("Remote Bytes Read", 0),
        shuffle_write_records=write.get("Shuffle Records Written", 0),
        gc_time_ms=m.get("JVM GC Time", 0), peak_execution_memory=m.get("Peak Execution Memory", 0))
