"""What one RegMix proxy costs: the lean loop (trainer.proxy) against a NeMo launch (trainer.pretrain).

    .venv/bin/python bench/proxy.py [--lake L --stage S] [--steps 10] [--sweep 6] [--workers 2] [--json out.json]

Both train the same tiny Qwen2 (2 layers, hidden 64, 4 heads / 2 KV groups, SwiGLU 128, 128-token
samples, batch 8) for `--steps` steps on the same shards and validate once at the end. Figures:

- NeMo: wall time of `python -m trainer.pretrain` in a fresh process (what a sweep would pay per
  proxy: start-up, Megatron's index building, training, validation, a checkpoint), full vocabulary;
- lean, fresh process: the same for one `train_proxy` (imports included), full and compact vocabulary;
- lean, in a warm process: `train_proxy` alone, what a sweep worker pays after its first proxy;
- a sweep of `--sweep` tiny-preset proxies (its default steps) with `--workers` workers: proxies/minute.

Without --lake a lake is built in a temp dir: the UDHR paragraphs of all 15 languages through the
real exporter (Spark), as stage `proxy`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def build_lake(root: Path) -> Path:
    from data_engine import lake
    from data_engine.export.shards import export_shards
    from data_engine.langs import LANGS
    from data_engine.sample.corpus import load_udhr
    from data_engine.spark import get_spark

    spark = get_spark("bench-proxy", conf={"spark.master": "local[2]", "spark.sql.shuffle.partitions": "4"})
    rows = [(f"{lang}-{i:03d}", lang, para) for lang in LANGS
            for i, para in enumerate(p for section in load_udhr(lang) for p in section)]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, text string"), str(root / "lake"),
                     "docs_curated", mode="error")
    export_shards(spark, str(root / "lake"), str(root / "shards"), "proxy")
    spark.stop()
    return root / "lake"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    out["PYTHONPATH"] = os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")])
    return out


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def nemo_seconds(lake: Path, stage: str, steps: int, split: str, work: Path) -> float:
    cfg = {"train": {
        "name": "bench-proxy", "work_dir": str(work), "val_check_interval": steps, "limit_val_batches": 2,
        "model": {"num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128, "num_attention_heads": 4,
                  "num_query_groups": 2, "seq_length": 128},
        "data": {"lake": str(lake), "stage": stage, "seq_length": 128, "micro_batch_size": 8, "global_batch_size": 8,
                 "split": split},
        "schedule": {"max_steps": steps, "lr": 3e-3, "min_lr": 3e-3, "warmup_ratio": 0.1, "hold_ratio": 0.9},
    }}
    path = work / "nemo.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return timed([sys.executable, "-m", "trainer.pretrain", "--config", str(path)], work)


LEAN = """
import sys
from trainer.proxy import load_shards, proxy_config, train_proxy
lake, stage, steps, compact = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
cfg = proxy_config("tiny", {"steps": steps, "compact_vocab": compact})
data = load_shards(lake, stage, split=cfg.split)
train_proxy(data, {lang: 1.0 for lang in data.langs}, cfg)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake", type=Path)
    p.add_argument("--stage", default="proxy")
    p.add_argument("--steps", type=int, default=10, help="steps of the NeMo-vs-lean comparison")
    p.add_argument("--sweep", type=int, default=6, help="tiny-preset proxies in the sweep measurement (0: none)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()

    from trainer.proxy import load_shards, proxy_config, train_proxy
    from trainer.sweep import SweepConfig, run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    lake = args.lake.resolve() if args.lake else build_lake(tmp)
    tiny = proxy_config("tiny")
    data = load_shards(lake, args.stage, split=tiny.split)
    weights = {lang: 1.0 for lang in data.langs}
    figures: dict[str, float] = {"languages": len(data.langs), "compact_vocab_size": len(data.vocabulary()),
                                 "steps": args.steps}

    script = tmp / "lean.py"
    script.write_text(LEAN, encoding="utf-8")
    for compact in (False, True):
        name = "compact" if compact else "full_vocab"
        figures[f"lean_fresh_process_{name}_s"] = timed(
            [sys.executable, str(script), str(lake), args.stage, str(args.steps), str(int(compact))], tmp)
        train_proxy(data, weights, proxy_config("tiny", {"steps": 1, "compact_vocab": compact}))  # warm up
        cfg = proxy_config("tiny", {"steps": args.steps, "compact_vocab": compact})
        figures[f"lean_warm_{name}_s"] = train_proxy(data, weights, cfg).seconds
    figures["lean_warm_tiny_preset_s"] = train_proxy(data, weights, tiny).seconds
    figures["tiny_preset_steps"] = tiny.steps
    (tmp / "nemo").mkdir()
    figures["nemo_fresh_process_s"] = nemo_seconds(lake, args.stage, args.steps, tiny.split, tmp / "nemo")

    if args.sweep:
        rng = np.random.default_rng(0)
        mixtures = rng.dirichlet(np.ones(len(data.langs)), size=args.sweep)
        started = time.perf_counter()
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        result = run_sweep(lake, tmp / "sweep", data.langs, mixtures,
                           SweepConfig(workers=args.workers, runs=args.sweep, stage=args.stage), meta={},
                           log=lambda m: print(m, file=sys.stderr, flush=True))
        figures["sweep_proxies"] = args.sweep
        figures["sweep_workers"] = args.workers
        figures["sweep_wall_s"] = time.perf_counter() - started
        figures["sweep_proxies_per_minute"] = result.proxies_per_minute
        figures["sweep_seconds_per_proxy_in_worker"] = result.seconds_per_proxy

    s = args.steps
    print(f"{len(data.langs)} languages, compact vocabulary {figures['compact_vocab_size']} ids; {s} steps × 8 × 128")
    print(f"{'':34} {'seconds':>8} {'proxies/min':>11}")
    for key, label in [("nemo_fresh_process_s", "NeMo launch (full vocab)"),
                       ("lean_fresh_process_full_vocab_s", "lean, fresh process, full vocab"),
                       ("lean_fresh_process_compact_s", "lean, fresh process, compact"),
                       ("lean_warm_full_vocab_s", "lean, warm process, full vocab"),
                       ("lean_warm_compact_s", "lean, warm process, compact")]:
        print(f"{label:34} {figures[key]:>8.2f} {60 / figures[key]:>11.1f}")
    print(f"tiny preset ({tiny.steps} steps), warm: {figures['lean_warm_tiny_preset_s']:.2f} s")
    if args.sweep:
        print(f"sweep of {args.sweep} tiny proxies, {args.workers} workers: {figures['sweep_wall_s']:.1f} s wall, "
              f"{figures['sweep_proxies_per_minute']:.1f} proxies/min (worker start-up included), "
              f"{figures['sweep_seconds_per_proxy_in_worker']:.2f} s per proxy in its worker")
    nemo = figures["nemo_fresh_process_s"]
    print(f"NeMo / lean (fresh process, same vocab): {nemo / figures['lean_fresh_process_full_vocab_s']:.1f}×; "
          f"NeMo / lean (warm, compact): {nemo / figures['lean_warm_compact_s']:.0f}×")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
