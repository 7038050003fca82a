"""Export a NeMo 2 Qwen2 checkpoint to a Hugging Face directory that transformers loads.

    sailyard export-hf --checkpoint <nemo ckpt or checkpoints dir> --out <hf dir> [--base DIR] [--overwrite]

A folder of checkpoints exports its newest `*-last`. HF config fields NeMo does not hold
(max_position_embeddings, bos/eos, sliding-window settings) come from --base, an imported
checkpoint or the HF dir it came from; an imported checkpoint is its own base. Every NeMo tensor
is checked against the written safetensors; `sailyard_export.json` records the checkpoint.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export-hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="NeMo checkpoint, or a folder holding '*-last' ones")
    p.add_argument("--out", required=True, help="Hugging Face directory to write")
    p.add_argument("--base", help="imported checkpoint or HF dir whose config fields NeMo does not hold")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from trainer.convert import EXPORT_RECORD, export_hf
        from trainer.pretrain import stdout_to_stderr

        with stdout_to_stderr():
            rec = export_hf(args.checkpoint, args.out, base=args.base, overwrite=args.overwrite)
        return {"checkpoint": rec.checkpoint, "out": rec.output, "record": f"{rec.output}/{EXPORT_RECORD}",
                "base": rec.base, "num_layers": rec.hf_config.get("num_hidden_layers"),
                "hf_tensors": rec.accounting.hf_tensors, "nemo_tensors": rec.accounting.nemo_tensors,
                "elements_checked": rec.accounting.elements, "export_seconds": rec.seconds}

    from data_engine.jobrun import run_job

    return run_job("export_hf", work)


if __name__ == "__main__":
    sys.exit(main())
