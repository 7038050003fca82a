"""The job contract: one JSON summary object as the last line of stdout, a useful exit code.

Every entry point (spark-submit jobs, `sailyard` sub-commands, the trainer) runs its work through
`run_job`, so the summary shape and the error handling are the same everywhere:

    {"job": "ingest", "status": "ok", "in": 12, "kept": 10, "dropped": 0, "quarantined": 2,
     "tables": {"docs_raw": 3, "quarantine": 1}, "mlflow_run_id": "…", "seconds": 8.1, …}

On failure the summary has `"status": "error"` and `"error"`, one line naming what to fix goes to
stderr, and the exit code is 1 (2 for bad arguments or configuration). A failure inside Spark (the
JVM, a task, a Python worker) becomes one line too: what broke or ran out, in which Spark stage, and
which setting to change; its Java or worker traceback goes to stderr only, never into the summary.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from data_engine.errors import ConfigError, SailyardError

COUNT_KEYS = ("in", "kept", "dropped", "quarantined")
# The summary's `error` stays a line a person reads (SailyardError messages are ours, kept whole).
ERROR_LIMIT = 300


def summary_line(job: str, result: Mapping[str, Any] | None = None, **extra: Any) -> str:
    obj: dict[str, Any] = {"job": job}
    obj.update(result or {})
    obj.update(extra)
    return json.dumps(obj, ensure_ascii=False, default=str, sort_keys=False)


def run_job(job: str, work: Callable[[], Mapping[str, Any]]) -> int:
    """Run `work`, print its summary as the last stdout line, return the exit code.

    `work` returns the summary fields (counts, `tables`, `mlflow_run_id`, …); timing and status
    are added here.
    """
    started = time.time()
    try:
        result = dict(work())
    except SailyardError as exc:
        return _fail(job, exc, started, code=2 if isinstance(exc, ConfigError) else 1)
    except KeyboardInterrupt:
        return _fail(job, RuntimeError("interrupted"), started, code=130)
    except Exception as exc:  # a bug or an environment problem: keep the traceback for the log
        traceback.print_exc(file=sys.stderr)
        _print_jvm_trace(exc)
        return _fail(job, exc, started, code=1)
    result = {"status": "ok", **result, "seconds": round(time.time() - started, 2)}
    sys.stdout.flush()
    print(summary_line(job, result), flush=True)
    return 0


def _fail(job: str, exc: BaseException, started: float, *, code: int) -> int:
    message = error_message(exc)
    # Our own errors are written to be read whole; anything else is cut (its traceback, printed
    # before, has the full text).
    if len(message) > ERROR_LIMIT and not isinstance(exc, SailyardError):
        message = message[:ERROR_LIMIT - 1].rstrip() + "…"
    print(f"sailyard {job}: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    print(summary_line(job, {"status": "error", "error": message,
                             "error_type": type(exc).__name__,
                             "seconds": round(time.time() - started, 2)}), flush=True)
    return code


def error_message(exc: BaseException) -> str:
    """One line for the summary: a Spark failure explained, anything else its own message."""
    if _from_spark(exc):
        return describe_spark_failure(spark_failure(exc))
    return _one_line(_safe_str(exc)) or type(exc).__name__


# --- Spark failures -------------------------------------------------------------------------------

# A Java exception named where a message or trace line starts (after "Caused by: " or a task's
# "(host executor 1): "), with the rest of that line as its message.
_JAVA_THROWABLE = re.compile(
    r"(?:^|Caused by: |\): |: )((?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Error|Exception|Throwable))(?::[ \t]*([^\n]*))?")
_STAGE = re.compile(r"\bin stage (\d+(?:\.\d+)?)")
_LOST_ON = re.compile(r"Lost task \S+ in stage \S+ \(TID \d+\) \([^)]*?executor (\w+)\)")
_PY_TRACEBACK = "Traceback (most recent call last):"
# What py4j says when the driver's JVM has gone (killed for memory, most often).
_JVM_GONE = ("Answer from Java side is empty", "Error while sending or receiving", "Connection refused",
             "Java gateway process exited")
# What a call into a SparkContext stopped under it raises (the driver's JVM shutting down, most
# often after an OutOfMemoryError in a task thread): the exception is about the stop, not its cause.
_CONTEXT_STOPPED = ("SparkContext was shut down", "stopped SparkContext", 'dagScheduler()" is null',
                    "SparkContext has been shutdown")
# Executors lost to a memory limit: exit code 52 is Spark's OutOfMemoryError exit, 137 a kill -9
# (a container's memory limit).
_EXECUTOR_MEMORY = re.compile(r"(?:code|status|exitCode)[:=]? ?(?:52|137)\b|exceeding memory limits|OOMKilled"
                              r"|container OOM", re.IGNORECASE)


@dataclass(frozen=True)
class Throwable:
    """One link of a cause chain: the exception class and the first line of its message."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


@dataclass(frozen=True)
class SparkFailure:
    """What a Spark-side exception says, gathered once (later JVM calls may fail)."""

    chain: tuple[Throwable, ...]  # outermost first; the last one is the root cause
    text: str                     # every message and trace text, for stage and executor hints
    python_error: str | None      # "ValueError: boom", the last line of a Python worker's traceback
    jvm_gone: bool                # the driver could not reach its JVM any more

    @property
    def root(self) -> Throwable | None:
        return self.chain[-1] if self.chain else None


def _from_spark(exc: BaseException) -> bool:
    """py4j's and pyspark's exceptions (recognised without importing either), and a connection
    error raised inside py4j: what a call into a JVM that has died raises."""
    if any(cls.__module__.split(".")[0] in ("py4j", "pyspark") for cls in type(exc).__mro__):
        return True
    return isinstance(exc, ConnectionError) and any(
        frame.f_globals.get("__name__", "").startswith("py4j.")
        for frame, _ in traceback.walk_tb(exc.__traceback__))


def spark_failure(exc: BaseException) -> SparkFailure:
    """Walk the Java cause chain (when the JVM still answers) and read what the texts say."""
    origin = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    java_chain, java_texts = _java_chain(origin) if origin is not None else ((), [])
    own = _safe_str(exc)
    desc = getattr(exc, "_desc", None)
    texts = [desc, own, *java_texts]
    # pyspark raises the task's exception `from None`: the SparkException it unwrapped (which names
    # the stage) is still the context.
    texts += [_safe_str(link) for link in _python_chain(exc)[1:] if _from_spark(link)]
    text = "\n".join(t for t in texts if t)
    chain = list(java_chain)
    if not chain or chain[-1].name.endswith("SparkException"):
        # The task's exception reached the driver as text only (or the JVM is gone): the last
        # Java exception named in that text is the root.
        named = _named_throwables(java_texts[-1] if java_texts else text)
        if named and (not chain or named[-1].name != chain[-1].name):
            chain.append(named[-1])
    if not chain:
        chain.append(Throwable(type(exc).__name__, _one_line(_first_line(desc or own))))
    return SparkFailure(chain=tuple(chain), text=text, python_error=_python_error(text),
                        jvm_gone=_jvm_gone(exc, text))


def _java_chain(throwable: Any) -> tuple[tuple[Throwable, ...], list[str]]:
    """(class, first line) for each cause down to the root, and each full message; stops quietly
    if the JVM stops answering mid-walk."""
    chain: list[Throwable] = []
    texts: list[str] = []
    try:
        while throwable is not None and len(chain) < 32:  # a cycle cannot loop for ever
            message = throwable.getMessage()
            message = "" if message is None else str(message)
            chain.append(Throwable(str(throwable.getClass().getName()), _one_line(_first_line(message))))
            texts.append(message)
            throwable = throwable.getCause()
    except Exception:
        pass
    return tuple(chain), texts


def _named_throwables(text: str) -> list[Throwable]:
    """Java exceptions named in a trace text, in order; stack frame lines are not read."""
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith(("at ", "...")):
            continue
        for match in _JAVA_THROWABLE.finditer(line):
            found.append(Throwable(match.group(1), _one_line(match.group(2) or "")))
    return found


def _python_error(text: str) -> str | None:
    """The exception line of the last Python traceback in `text` (a UDF's or a worker's)."""
    start = text.rfind(_PY_TRACEBACK)
    if start < 0:
        return None
    last = None
    for line in text[start + len(_PY_TRACEBACK):].splitlines():
        if line.startswith(("JVM stacktrace", "\tat ", "\tat\t")) or line.startswith("Caused by: "):
            break
        if line and not line[0].isspace() and not line.startswith(("SQLSTATE", "During handling",
                                                                   "The above exception")):
            last = line.strip()
    return _one_line(last) if last else None


def _jvm_gone(exc: BaseException, text: str) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if any(_network_failure(link) for link in _python_chain(exc)):
        return True
    return "Py4JJavaError" not in names and "CapturedException" not in names and any(
        marker in text for marker in _JVM_GONE)


def _python_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain and len(chain) < 32:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _network_failure(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError) or any(cls.__name__ == "Py4JNetworkError" for cls in type(exc).__mro__)


def describe_spark_failure(failure: SparkFailure) -> str:
    """The one line: what ran out or broke, where, and what to change."""
    root = failure.root
    stage = _stage(failure.text) or (_failed_stage() if failure.python_error else None)
    where = f" in Spark stage {stage}" if stage else ""
    executor = _lost_on_executor(failure.text)
    if root is not None and root.name.endswith("OutOfMemoryError"):
        if executor is None:
            return _driver_oom(f"the Spark driver ran out of memory ({root}){where}")
        return (f"Spark executor {executor} ran out of memory ({root}){where}; raise the executor heap: "
                f"spark-submit --executor-memory {_more_memory('spark.executor.memory', '1g')} … "
                "(or split the input into more partitions)")
    if "ExecutorLostFailure" in failure.text and _EXECUTOR_MEMORY.search(failure.text):
        return (f"a Spark executor was killed for using too much memory{where}; raise "
                f"spark-submit --executor-memory {_more_memory('spark.executor.memory', '1g')} … "
                "and --conf spark.executor.memoryOverhead=2g (Python workers live in the overhead)")
    if "Python worker exited unexpectedly" in failure.text:
        return (f"a Spark Python worker died{where} (often killed for memory); raise "
                "--conf spark.executor.memoryOverhead=2g or lower "
                "spark.sql.execution.arrow.maxRecordsPerBatch")
    if failure.python_error is not None:
        if failure.python_error.startswith("MemoryError"):
            return (f"a Spark Python worker ran out of memory{where} ({failure.python_error}); raise "
                    "--conf spark.executor.memoryOverhead=2g or lower spark.sql.execution.arrow.maxRecordsPerBatch")
        return f"a Python task failed{where}: {failure.python_error}"
    if failure.jvm_gone:
        return _driver_oom("the Spark driver's JVM stopped (most often it ran out of memory)")
    if any(marker in failure.text for marker in _CONTEXT_STOPPED):
        return _driver_oom(f"the Spark driver stopped while the job ran{where} (most often it ran out of "
                           "memory: look for OutOfMemoryError in the log above)")
    if root is not None and root.message.startswith("["):  # Spark's own error class says it all
        return f"Spark failed{where}: {root.message}"
    return f"Spark failed{where}: {root}"


def _driver_oom(what: str) -> str:
    more = _more_memory("spark.driver.memory", os.environ.get("SAILYARD_DRIVER_MEMORY", "4g"))
    return (f"{what}; raise the driver heap: spark-submit --driver-memory {more} … "
            f"(SAILYARD_DRIVER_MEMORY={more} when run from Python)")


def _stage(text: str) -> str | None:
    match = _STAGE.search(text)
    return match.group(1) if match else None


def _failed_stage() -> str | None:
    """The failed stage of the session's latest job, if that job failed: Spark 4 rethrows a task's
    own error (a Python worker's, say) without the "stage failure" text that names the stage. The
    status store is fed asynchronously, so this may find nothing; it never guesses an older job."""
    try:
        from pyspark import SparkContext

        context = SparkContext._active_spark_context
        if context is None:
            return None
        tracker = context.statusTracker()
        job_ids = tracker.getJobIdsForGroup(context.getLocalProperty("spark.jobGroup.id"))
        job = tracker.getJobInfo(max(job_ids)) if job_ids else None
        if job is None or job.status != "FAILED":
            return None
        for stage_id in sorted(job.stageIds, reverse=True):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None and stage.numFailedTasks > 0:
                return f"{stage.stageId}.{stage.currentAttemptId}"
    except Exception:
        pass
    return None


def _lost_on_executor(text: str) -> str | None:
    """The executor a task was lost on; None for the driver (local mode) or a driver-side call."""
    match = _LOST_ON.search(text)
    if match is None or match.group(1) == "driver":
        return None
    return match.group(1)


def _more_memory(key: str, default: str) -> str:
    """Twice the session's current setting (or `default` when the JVM cannot tell us)."""
    current = default
    try:
        from pyspark import SparkContext

        context = SparkContext._active_spark_context
        if context is not None:
            current = context.getConf().get(key, default) or default
    except Exception:
        pass
    return _doubled(current)


def _doubled(size: str) -> str:
    match = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)b?\s*", size.lower())
    if match is None:
        return "8g"
    number, unit = int(match.group(1)), match.group(2) or "b"
    if unit == "m" and number * 2 >= 1024 and (number * 2) % 1024 == 0:
        return f"{number * 2 // 1024}g"
    return f"{number * 2}{'' if unit == 'b' else unit}"


def _print_jvm_trace(exc: BaseException) -> None:
    """pyspark hides the JVM stack trace of the exceptions it converts; the log keeps it."""
    trace = getattr(exc, "_stackTrace", None)
    if trace and _from_spark(exc) and trace not in _safe_str(exc):
        print(f"JVM stacktrace:\n{trace}", file=sys.stderr, flush=True)


def _safe_str(exc: BaseException) -> str:
    """str() of a py4j error asks the JVM for its trace; a dead JVM must not hide the error."""
    try:
        return str(exc)
    except Exception:
        return " ".join(str(arg) for arg in getattr(exc, "args", ()) if isinstance(arg, str))


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _one_line(text: str) -> str:
    return " ".join(text.split())
