"""A run's checkpoint folder made resumable after a kill at any moment.

NeMo marks a checkpoint being written with a `<checkpoint>-unfinished` file beside it and removes
the marker when the save completes. A job killed mid-save leaves the marker; on the next start NeMo's
AutoResume skips that checkpoint, and when it was the only `*-last` one it refuses to start at all
("Last checkpoint is unfinished … Please remove the checkpoint manually"). A preempted job started
again by a scheduler has nobody to do that. So before NeMo looks, every unfinished checkpoint is set
aside (moved under `.unfinished/`, never deleted: it is evidence), and when no complete `*-last` is
left the newest complete periodic checkpoint is renamed to a `*-last` one, which is what NeMo
resumes from. With no complete checkpoint left the run starts from the beginning (or from its
`restore_from`), which is what it would have done had the kill come before the first save.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine.errors import ConfigError

UNFINISHED = "-unfinished"  # NeMo's ModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX
ASIDE = ".unfinished"
RUN_RECORD = "sailyard_run.json"
"""What a run's checkpoints were trained on: written at its first start, checked at every resume."""
_STEP = re.compile(r"step=(\d+)")


@dataclass
class Repair:
    set_aside: list[str] = field(default_factory=list)
    """Unfinished checkpoints moved under `.unfinished/`."""
    promoted: str | None = None
    """The complete checkpoint renamed to `*-last` so that NeMo resumes from it."""


def _step(path: Path) -> int:
    match = _STEP.search(path.name)
    return int(match.group(1)) if match else -1


def repair(checkpoints: Path) -> Repair:
    """Set aside unfinished checkpoints in `checkpoints`; make the newest complete one resumable."""
    done = Repair()
    if not checkpoints.is_dir():
        return done
    for marker in sorted(checkpoints.glob(f"*{UNFINISHED}")):
        ckpt = marker.with_name(marker.name[: -len(UNFINISHED)])
        aside = checkpoints / ASIDE / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.mkdir(parents=True, exist_ok=True)
        if ckpt.exists():
            os.replace(ckpt, aside / ckpt.name)
            done.set_aside.append(ckpt.name)
        os.replace(marker, aside / marker.name)
    complete = [d for d in checkpoints.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if complete and not any(d.name.endswith("-last") for d in complete):
        newest = max(complete, key=_step)
        target = newest.with_name(newest.name + "-last")
        os.replace(newest, target)
        done.promoted = target.name
    return done


def check_identity(checkpoints: Path, identity: Mapping[str, Any]) -> None:
    """Refuse to resume `checkpoints` on other data or another model than it was started with.

    A rerun under the same name resumes that run's optimizer state and data position; on a
    re-exported shard set, another blend or another model shape that would silently train a
    different run than the one the checkpoints belong to. `identity` (the shard manifest digest of
    the rows used, the blend, the plan digest, the model config, the tokenizer …) is written beside
    the checkpoints when there is none to resume; afterwards it must match.

    Raises:
        ConfigError: naming every field that changed, old and new value.
    """
    record = checkpoints / RUN_RECORD
    resumable = checkpoints.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in checkpoints.iterdir())
    now = _flat(json.loads(json.dumps(identity, default=str)))
    if resumable and record.is_file():
        before = _flat(json.loads(record.read_text(encoding="utf-8")))
        changed = [f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in sorted(set(before) | set(now))
                   if before.get(k) != now.get(k)]
        if changed:
            raise ConfigError(f"the checkpoints in {checkpoints} belong to a run on other data or another model; "
                              f"changed: {'; '.join(changed)}. Give the run a new name (or restore_from its "
                              "checkpoint for a new stage) instead of resuming it")
        return
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, record)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


#: Where a checkpoint's base model is recorded: `sailyard import-hf` writes it beside the weights.
IMPORT_RECORD = "sailyard_import.json"


def lineage(checkpoint: Path) -> dict[str, Any] | None:
    """Which base model (and LlamaPro expansion) `checkpoint`'s weights descend from, or None.

    An imported checkpoint says it in its import record; a checkpoint a run wrote inherits what its
    run record says (stage 2 restored from stage 1 knows stage 1's base).
    """
    record = checkpoint / IMPORT_RECORD
    if record.is_file():
        doc = json.loads(record.read_text(encoding="utf-8"))
        expansion = doc.get("expansion")
        return {"base_model": doc.get("source"), "import": str(checkpoint),
                "expansion": None if expansion is None else {
                    k: expansion.get(k) for k in ("source", "old_layers", "new_layers", "new_layer_indices",
                                                  "new_layer_sources", "rule")}}
    run = checkpoint.parent / RUN_RECORD
    if run.is_file():
        return json.loads(run.read_text(encoding="utf-8")).get("lineage")
    return None


#: Beside the checkpoints of a run that reached its last step (what stage 2 starts from).
FINISHED_RECORD = "sailyard_finished.json"


def mark_finished(checkpoints: Path, *, steps: int, checkpoint: Path, mlflow_run_id: str | None,
                  work_dir: Path) -> None:
    """Record that the run reached its last step, which checkpoint holds it, and the MLflow run (and
    the work dir whose store holds it) that later steps such as `export-hf` log beside."""
    record = checkpoints / FINISHED_RECORD
    tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"steps": steps, "checkpoint": str(checkpoint), "mlflow_run_id": mlflow_run_id,
                               "work_dir": str(work_dir)}, indent=2), encoding="utf-8")
    os.replace(tmp, record)


def finished(checkpoints: Path) -> dict[str, Any] | None:
    """What `mark_finished` recorded, or None for a run that has not finished."""
    record = checkpoints / FINISHED_RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None


# --- several processes ---------------------------------------------------------------------------

#: Where launchers put the global rank: torchrun, then srun (NeMo-Run's Slurm executor starts one task a GPU).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (or the only one): the one that records and tracks."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").strip():
            return int(os.environ[name]) == 0
    return True


def wait_until_repaired(checkpoints: Path, *, timeout: float = 600.0, poll: float = 0.5) -> None:
    """Block until rank 0 has set unfinished checkpoints aside (`repair`), so that every rank resumes
    from the same one. There is no process group yet to wait on, so the folder is watched.

    Raises:
        ConfigError: still not repaired after `timeout` seconds (rank 0 died, or cannot write).
    """
    deadline = time.monotonic() + timeout
    while True:
        if not checkpoints.is_dir():
            return
        entries = [p for p in checkpoints.iterdir() if not p.name.startswith(".")]
        unfinished = [p for p in entries if p.name.endswith(UNFINISHED)]
        complete = [p for p in entries if p.is_dir()]
        if not unfinished and (not complete or any(p.name.endswith("-last") for p in complete)):
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"{checkpoints}: rank 0 did not set the unfinished checkpoints aside within "
                              f"{timeout:.0f} s ({', '.join(p.name for p in unfinished) or 'no *-last checkpoint'})")
        time.sleep(poll)
