"""Export a NeMo 2 Qwen2 checkpoint to a Hugging Face directory that transformers loads.

    sailyard export-hf --checkpoint <nemo ckpt or checkpoints dir> --out <hf dir> [--base DIR] [--overwrite]

A folder of checkpoints exports its newest `*-last`. HF config fields NeMo does not hold
(max_position_embeddings, bos/eos, sliding-window settings) come from --base, an imported
checkpoint or the HF dir it came from; an imported checkpoint is its own base. Every NeMo tensor
is checked against the written safetensors; `sailyard_export.json` records the checkpoint.

A checkpoint a finished training run wrote is logged in that run's MLflow chain: an `export_hf` run
beside the stage's run (under the plan's `train-plan` run), holding the HF model as an artifact when
it is at most --max-artifact-mb (the tiny one), and its path otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.convert import ExportRecord


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export-hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="NeMo checkpoint, or a folder holding '*-last' ones")
    p.add_argument("--out", required=True, help="Hugging Face directory to write")
    p.add_argument("--base", help="imported checkpoint or HF dir whose config fields NeMo does not hold")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--max-artifact-mb", type=float, default=512.0,
                   help="log the HF model into MLflow up to this size; larger ones are logged by path (default 512)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from trainer.convert import EXPORT_RECORD, export_hf
        from trainer.pretrain import stdout_to_stderr

        with stdout_to_stderr():
            rec = export_hf(args.checkpoint, args.out, base=args.base, overwrite=args.overwrite)
            tracked = track_export(rec, max_artifact_bytes=int(args.max_artifact_mb * 2**20))
        return {"checkpoint": rec.checkpoint, "out": rec.output, "record": f"{rec.output}/{EXPORT_RECORD}",
                "base": rec.base, "num_layers": rec.hf_config.get("num_hidden_layers"),
                "hf_tensors": rec.accounting.hf_tensors, "nemo_tensors": rec.accounting.nemo_tensors,
                "elements_checked": rec.accounting.elements, "export_seconds": rec.seconds, **tracked}

    from data_engine.jobrun import run_job

    return run_job("export_hf", work)


def track_export(rec: ExportRecord, *, max_artifact_bytes: int) -> dict:
    """Log the export beside the training run that wrote the checkpoint; nothing when none did."""
    from pathlib import Path

    from data_engine import tracking
    from trainer import checkpoints

    ckpt, out = Path(rec.checkpoint), Path(rec.output)
    done = checkpoints.finished(ckpt.parent)
    if not done or not done.get("mlflow_run_id") or Path(done["checkpoint"]) != ckpt:
        return {"mlflow_run_id": None}
    from mlflow.tracking import MlflowClient

    work_dir = done["work_dir"]
    client = MlflowClient(tracking_uri=tracking.tracking_uri(work_dir))
    train_run = client.get_run(done["mlflow_run_id"])
    parent = train_run.data.tags.get("mlflow.parentRunId") or train_run.info.run_id
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    with tracking.start_run("export_hf", work_dir=work_dir, kind="export_hf", parent_run_id=parent) as run:
        run.set_tags({"checkpoint": ckpt, "hf_model_path": out, "train_run_id": train_run.info.run_id,
                      "train.stage": train_run.data.tags.get("train.stage"),
                      "plan_digest": train_run.data.tags.get("plan_digest")})
        run.log_metrics({"hf_model_mb": size / 2**20, "export_seconds": rec.seconds})
        logged = size <= max_artifact_bytes
        if logged:
            run.log_artifact(out, "hf_model")
        run.set_tags({"hf_model_artifact": "hf_model" if logged else "not logged (larger than --max-artifact-mb)"})
        client.set_tag(train_run.info.run_id, "exported_hf_model", str(out))
    return {"mlflow_run_id": run.run_id, "hf_model_logged": logged, "hf_model_mb": round(size / 2**20, 1)}


if __name__ == "__main__":
    sys.exit(main())
