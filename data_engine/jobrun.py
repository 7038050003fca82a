"""The job contract: one JSON summary object as the last line of stdout, a useful exit code.

Every entry point (spark-submit jobs, `sailyard` sub-commands, the trainer) runs its work through
`run_job`, so the summary shape and the error handling are the same everywhere:

    {"job": "ingest", "status": "ok", "in": 12, "kept": 10, "dropped": 0, "quarantined": 2,
     "tables": {"docs_raw": 3, "quarantine": 1}, "mlflow_run_id": "…", "seconds": 8.1, …}

On failure the summary has `"status": "error"` and `"error"`, one line naming what to fix goes to
stderr, and the exit code is 1 (2 for bad arguments or configuration).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from data_engine.errors import ConfigError, SailyardError

COUNT_KEYS = ("in", "kept", "dropped", "quarantined")


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
        return _fail(job, exc, started, code=1)
    result = {"status": "ok", **result, "seconds": round(time.time() - started, 2)}
    sys.stdout.flush()
    print(summary_line(job, result), flush=True)
    return 0


def _fail(job: str, exc: BaseException, started: float, *, code: int) -> int:
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"sailyard {job}: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    print(summary_line(job, {"status": "error", "error": message,
                             "error_type": type(exc).__name__,
                             "seconds": round(time.time() - started, 2)}), flush=True)
    return code
