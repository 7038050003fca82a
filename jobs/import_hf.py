"""Import a Hugging Face Qwen2 checkpoint (Qwen2.5, or its LlamaPro expansion) into NeMo 2.

    sailyard import-hf --model <hf dir> --out <nemo dir> [--seq-length 4096] [--overwrite]

Writes a NeMo checkpoint that training restores its weights from, set up for the training
sequence length (not the model's max_position_embeddings), and `sailyard_import.json` in it: the
source, the sha256 of its weight files, the NeMo config and the source's expansion record. Every
HF tensor is checked against the written checkpoint; on any difference nothing is left at --out.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="import-hf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json, safetensors, tokenizer)")
    p.add_argument("--out", required=True, help="NeMo checkpoint directory to write")
    p.add_argument("--seq-length", type=int, default=4096, help="training sequence length (default 4096, Sailor2's)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from trainer.convert import IMPORT_RECORD, import_hf
        from trainer.pretrain import stdout_to_stderr

        with stdout_to_stderr():  # NeMo prints; the last stdout line is the summary
            rec = import_hf(args.model, args.out, seq_length=args.seq_length, overwrite=args.overwrite)
        return {"source": rec.source, "checkpoint": rec.output, "record": f"{rec.output}/{IMPORT_RECORD}",
                "seq_length": rec.seq_length, "num_layers": rec.nemo_config["num_layers"],
                "hf_tensors": rec.accounting.hf_tensors, "nemo_tensors": rec.accounting.nemo_tensors,
                "elements_checked": rec.accounting.elements, "expanded": rec.expansion is not None,
                "import_seconds": rec.seconds}

    from data_engine.jobrun import run_job

    return run_job("import_hf", work)


# The checkpoint writer starts a helper process that re-imports this module: the guard keeps it
# from importing again.
if __name__ == "__main__":
    sys.exit(main())
