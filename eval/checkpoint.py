"""What `--checkpoint` names: a Hugging Face dir, a NeMo checkpoint, or a run's checkpoint folder.

The scorers run on Hugging Face weights (the same code path as lm-evaluation-harness's HFLM), so a
NeMo checkpoint is first exported with the trainer's `export-hf` into the work dir's eval cache,
once: a second eval of the same checkpoint reuses the export when its record still matches. The
training run behind the checkpoint (where eval runs nest in MLflow) comes from the run's
`sailyard_finished.json`, or an HF dir's export record, or the run tagged with the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from data_engine.digests import file_digest
from data_engine.errors import ConfigError

EXPORT_RECORD = "sailyard_export.json"
FINISHED_RECORD = "sailyard_finished.json"


@dataclass(frozen=True)
class Checkpoint:
    hf_dir: Path
    nemo: Path | None          # the NeMo checkpoint the HF dir was exported from, when known
    training_run_id: str | None
    label: str                 # what results are keyed by: the NeMo checkpoint, else the HF dir
    exported: bool = False     # this call exported it (False: given as HF or the cached export reused)


def is_hf_dir(path: Path) -> bool:
    weights = any(path.glob("*.safetensors")) or (path / "pytorch_model.bin").is_file()
    return (path / "config.json").is_file() and weights


def _nemo_checkpoint(path: Path) -> Path | None:
    if (path / "weights").is_dir() and (path / "context").is_dir():
        return path
    last = sorted((p for p in path.glob("*-last") if (p / "weights").is_dir()), key=lambda p: p.stat().st_mtime)
    return last[-1] if last else None


def recorded_work_dir(target: str | Path) -> Path | None:
    """The work dir whose MLflow store holds the run that wrote `target` (its finished record), if known."""
    path = Path(target).expanduser().absolute()
    nemo = None
    if is_hf_dir(path) and (path / EXPORT_RECORD).is_file():
        source = json.loads((path / EXPORT_RECORD).read_text(encoding="utf-8")).get("checkpoint")
        nemo = Path(source) if source else None
    elif path.is_dir():
        nemo = _nemo_checkpoint(path)
    record = nemo.parent / FINISHED_RECORD if nemo is not None else None
    if record is not None and record.is_file():
        work = json.loads(record.read_text(encoding="utf-8")).get("work_dir")
        return Path(work) if work else None
    return None


def training_run_of(nemo: Path | None, work_dir: Path) -> str | None:
    if nemo is None:
        return None
    record = nemo.parent / FINISHED_RECORD
    if record.is_file():
        doc = json.loads(record.read_text(encoding="utf-8"))
        if doc.get("mlflow_run_id"):
            return str(doc["mlflow_run_id"])
    from data_engine import tracking

    for key in ("checkpoint", "checkpoints"):
        value = str(nemo if key == "checkpoint" else nemo.parent)
        runs = tracking.find_runs(work_dir, {key: value})
        if runs:
            return runs[0]
    return None


def resolve(target: str | Path, *, work_dir: Path) -> Checkpoint:
    path = Path(target).expanduser().absolute()
    if not path.exists():
        raise ConfigError(f"--checkpoint {path}: no such file or directory")
    if is_hf_dir(path):
        nemo = None
        record = path / EXPORT_RECORD
        if record.is_file():
            source = json.loads(record.read_text(encoding="utf-8")).get("checkpoint")
            nemo = Path(source) if source else None
        return Checkpoint(path, nemo, training_run_of(nemo, work_dir), str(nemo or path))
    nemo = _nemo_checkpoint(path)
    if nemo is None:
        raise ConfigError(f"--checkpoint {path}: neither a Hugging Face dir (config.json + weights), a NeMo "
                          f"checkpoint (weights/ and context/) nor a run folder holding a '*-last' checkpoint")
    cache = work_dir / "eval" / "hf" / hashlib.sha256(str(nemo).encode()).hexdigest()[:16]
    exported = False
    if not _cached(cache, nemo):
        from trainer.convert import export_hf

        export_hf(nemo, cache, overwrite=True)
        exported = True
    return Checkpoint(cache, nemo, training_run_of(nemo, work_dir), str(nemo), exported=exported)


def _cached(cache: Path, nemo: Path) -> bool:
    record = cache / EXPORT_RECORD
    if not record.is_file():
        return False
    doc = json.loads(record.read_text(encoding="utf-8"))
    if doc.get("checkpoint") != str(nemo):
        return False
    files = doc.get("files") or {}
    return bool(files) and all((cache / name).is_file() and file_digest(cache / name) == digest
                               for name, digest in files.items())
