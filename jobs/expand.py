"""Grow a Hugging Face Qwen2/Llama checkpoint with LlamaPro block expansion (Sailor2's first step).

    sailyard expand --model <hf dir> --to-layers N --out <dir> [--max-shard-size 5GB] [--untie-embeddings]

Writes the expanded checkpoint (sharded safetensors, same dtype, tokenizer and generation config
copied) and `expansion.json`, which says which output layers are new and where they came from.
Sailor2: Qwen2.5-0.5B --to-layers 48, Qwen2.5-7B --to-layers 32, Qwen2.5-14B --to-layers 64.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="expand", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face checkpoint directory (config.json + safetensors)")
    p.add_argument("--to-layers", required=True, type=int, help="layer count of the expanded model (> the model's)")
    p.add_argument("--out", required=True, help="output directory (new, or empty)")
    p.add_argument("--max-shard-size", default="5GB", help="largest output shard, e.g. 2GB (default 5GB)")
    p.add_argument("--untie-embeddings", action="store_true",
                   help="for a tied model, write lm_head as a copy of the embedding (as Sailor2-1B is)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> dict:
        from trainer.expand import RECORD_NAME, expand

        rec = expand(args.model, args.to_layers, args.out, max_shard_bytes=args.max_shard_size,
                     untie_embeddings=args.untie_embeddings)
        return {"old_layers": rec.old_layers, "new_layers": rec.new_layers,
                "new_layer_indices": list(rec.new_layer_indices), "new_layer_sources": list(rec.new_layer_sources),
                "parameters_before": rec.parameters_before, "parameters_after": rec.parameters_after,
                "shards": len(rec.shards), "out": rec.out, "record": f"{rec.out}/{RECORD_NAME}"}

    from data_engine.jobrun import run_job

    return run_job("expand", work)


if __name__ == "__main__":
    sys.exit(main())
