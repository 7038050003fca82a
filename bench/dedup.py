"""Near-dedup benchmark: sailyard vs datatrove vs text-dedup on the same documents, same machine.

    python bench/dedup.py [--docs 25000] [--scales 1,2,4] [--tools sailyard,datatrove,text-dedup]
                          [--peers-python PATH] [--out bench/results]
    make bench-dedup      # the same with the defaults (creates bench/.venv-peers for the peers)

Each scale runs every tool one after the other on one corpus: `--docs × scale` web-like
documents (`data_engine.sample.labelled.build_background`: 15 languages, boilerplate, ~12% edited
copies) plus the labelled near-duplicate set (720 documents with exact-Jaccard truth). All tools
use 5-gram shingles and the same bands × rows (default 20 × 6). For each run the table gives wall
seconds (sailyard's includes Spark start-up, also shown alone), documents per second, peak RSS of
the whole process tree, and pair-level F1 of "same cluster" on the labelled part. The peers run in
their own virtual environment (they need numpy 2; the project pins numpy < 2 for Megatron).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAILYARD_RUN = textwrap.dedent("""
    import json, sys, time
    t0 = time.time()
    from data_engine.dedup.config import NearDedupConfig
    from data_engine.dedup.near import dedup_near
    from data_engine.spark import get_spark
    corpus, out, bands, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    spark = get_spark("bench-near")
    t1 = time.time()
    df = spark.read.parquet(corpus)
    result = dedup_near(df, NearDedupConfig(bands=bands, rows=rows))
    result.kept.write.mode("overwrite").parquet(out + ".kept.parquet")
    labels = {r.doc_id: r._component for r in result.tagged.where("_component is not null")
              .select("doc_id", "_component").collect()}
    t2 = time.time()
    json.dump({"clusters": labels, "spark_start": t1 - t0, "dedup": t2 - t1, "metrics": result.metrics},
              open(out, "w"))
""")

DATATROVE_RUN = textwrap.dedent("""
    import json, sys
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    if __name__ == "__main__":
        corpus, work, out, bands, rows, workers = sys.argv[1:7]
        bands, rows, workers = int(bands), int(rows), int(workers)
        cfg = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows,
                            hash_config=HashConfig(precision=64))
        reader = lambda: ParquetReader(corpus, text_key="text", id_key="doc_id")
        logs = work + "/logs"
        LocalPipelineExecutor([reader(), MinhashDedupSignature(output_folder=work + "/sigs", config=cfg)],
                              tasks=workers, workers=workers, logging_dir=logs + "/1").run()
        LocalPipelineExecutor([MinhashDedupBuckets(input_folder=work + "/sigs", output_folder=work + "/buckets",
                                                   config=cfg)],
                              tasks=bands, workers=workers, logging_dir=logs + "/2").run()
        LocalPipelineExecutor([MinhashDedupCluster(input_folder=work + "/buckets", output_folder=work + "/remove",
                                                   config=cfg, save_cluster_id=True)],
                              tasks=1, logging_dir=logs + "/3").run()
        LocalPipelineExecutor([reader(), MinhashDedupFilter(input_folder=work + "/remove", load_cluster_ids=True,
                                                            exclusion_writer=JsonlWriter(work + "/removed")),
                               JsonlWriter(work + "/kept")],
                              tasks=workers, workers=workers, logging_dir=logs + "/4").run()
        import glob, gzip
        clusters = {}
        for path in glob.glob(work + "/kept/*") + glob.glob(work + "/removed/*"):
            with gzip.open(path, "rt") as handle:
                for line in handle:
                    doc = json.loads(line)
                    cid = doc["metadata"].get("minhash_cluster_id", -1)
                    if cid != -1:
                        clusters[doc["id"]] = str(cid)
        json.dump({"clusters": clusters}, open(out, "w"))
""")

TEXTDEDUP_RUN = textwrap.dedent("""
    import json, pickle, subprocess, sys
    from datasets import Dataset
    import pyarrow.parquet as pq
    corpus, work, out, bands, rows, workers = sys.argv[1:7]
    table = pq.read_table(corpus)
    ids = table.column("doc_id").to_pylist()
    rows_ = list(range(len(ids)))
    Dataset.from_dict({"text": table.column("text").to_pylist(), "row": rows_}).save_to_disk(work + "/in")
    subprocess.run([sys.executable, "-m", "text_dedup.minhash", "--path", work + "/in", "--local",
                    "--output", work + "/out", "--column", "text", "--idx_column", "row",
                    "--cache_dir", work + "/cache", "--ngram", "5", "--num_perm", str(int(bands) * int(rows)),
                    "--b", bands, "--r", rows, "--threshold", "0.8", "--num_proc", workers, "--debug"],
                   check=True, cwd=work)
    uf = pickle.load(open(work + "/out/uf.pkl", "rb"))
    clusters = {ids[r]: str(uf.find(r)) for r in uf.parent}
    json.dump({"clusters": clusters}, open(out, "w"))
""")


def peak_rss_of_tree(proc: subprocess.Popen, samples: list[int]) -> None:
    """Sum of RSS over the process and all its descendants, sampled every 0.2 s until it exits."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        samples.append(total)
        time.sleep(0.2)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, subprocess.CompletedProcess]:
    samples: list[int] = []
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=peak_rss_of_tree, args=(proc, samples), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    wall = time.time() - start
    watcher.join(timeout=1)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, max(samples, default=0), subprocess.CompletedProcess(cmd, 0, stdout, stderr)


def write_corpus(path: Path, docs: list, files: int = 2) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        part = docs[i::files]
        pq.write_table(pa.table({"doc_id": [d.doc_id for d in part], "lang": [d.lang for d in part],
                                 "text": [d.text for d in part]}), path / f"part-{i}.parquet", row_group_size=4000)


def main(argv: list[str] | None = None) -> int:
    from data_engine.dedup.shingles import ShingleSpec
    from data_engine.sample.labelled import build_background, build_labelled_set, pair_scores, truth_clusters

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=25000, help="background documents at scale 1")
    p.add_argument("--scales", default="1,2,4")
    p.add_argument("--tools", default="sailyard,datatrove,text-dedup")
    p.add_argument("--bands", type=int, default=20)
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--peers-python", default=str(ROOT / "bench" / ".venv-peers" / "bin" / "python"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    tools = args.tools.split(",")
    scales = [int(s) for s in args.scales.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    labelled = build_labelled_set()
    truth = truth_clusters(labelled, 0.8, ShingleSpec())
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    results = []
    for scale in scales:
        docs = build_background(args.docs * scale) + labelled
        work = Path(tempfile.mkdtemp(prefix=f"bench-dedup-{scale}x-"))
        write_corpus(work / "corpus", docs)
        for tool in tools:
            out = work / f"{tool}.json"
            tool_dir = work / tool
            tool_dir.mkdir()
            if tool == "sailyard":
                cmd = [sys.executable, "-c", SAILYARD_RUN, str(work / "corpus"), str(out), str(args.bands),
                       str(args.rows)]
            elif tool == "datatrove":
                script = tool_dir / "run.py"
                script.write_text(DATATROVE_RUN)
                cmd = [args.peers_python, str(script), str(work / "corpus"), str(tool_dir), str(out),
                       str(args.bands), str(args.rows), "2"]
            elif tool == "text-dedup":
                import pyarrow.parquet as pq

                pq.write_table(pq.read_table(work / "corpus"), tool_dir / "corpus.parquet")
                cmd = [args.peers_python, "-c", TEXTDEDUP_RUN, str(tool_dir / "corpus.parquet"), str(tool_dir),
                       str(out), str(args.bands), str(args.rows), "2"]
            else:
                raise SystemExit(f"unknown tool {tool}")
            try:
                wall, rss, _ = timed(cmd, env, ROOT)
            except RuntimeError as exc:
                print(f"{tool} at {scale}x failed: {exc}", file=sys.stderr)
                continue
            report = json.loads(out.read_text())
            labels = {k: v for k, v in report["clusters"].items() if k in truth}
            scores = pair_scores(labels, truth)
            row = {"tool": tool, "scale": scale, "docs": len(docs), "seconds": round(wall, 1),
                   "docs_per_s": round(len(docs) / wall), "peak_rss_mb": round(rss / 2**20),
                   "precision": round(scores.precision, 4), "recall": round(scores.recall, 4),
                   "f1": round(scores.f1, 4),
                   "spark_start_s": round(report["spark_start"], 1) if "spark_start" in report else None}
            results.append(row)
            print(json.dumps(row), flush=True)
    (out_dir / "dedup.json").write_text(json.dumps(results, indent=2))
    print_table(results, tools, scales)
    return 0


def print_table(results: list[dict], tools: list[str], scales: list[int]) -> None:
    head = f"{'tool':<11}{'scale':>6}{'docs':>9}{'seconds':>9}{'docs/s':>8}{'RSS MB':>8}{'P':>7}{'R':>7}{'F1':>7}"
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        print(f"{r['tool']:<11}{r['scale']:>6}{r['docs']:>9}{r['seconds']:>9}{r['docs_per_s']:>8}"
              f"{r['peak_rss_mb']:>8}{r['precision']:>7}{r['recall']:>7}{r['f1']:>7}"
              + (f"   (Spark start {r['spark_start_s']} s)" if r.get("spark_start_s") is not None else ""))
    by = {(r["tool"], r["scale"]): r for r in results}
    for scale in scales:
        ours, theirs = by.get(("sailyard", scale)), by.get(("datatrove", scale))
        if ours and theirs:
            print(f"sailyard/datatrove throughput at {scale}x: {ours['docs_per_s'] / theirs['docs_per_s']:.2f}")
    for tool in tools:
        runs = [by[(tool, s)] for s in scales if (tool, s) in by]
        if len(runs) > 1:
            base = runs[0]
            ratios = ", ".join(f"{r['scale'] // base['scale']}x docs → {r['seconds'] / base['seconds']:.2f}x time"
                               for r in runs[1:])
            print(f"{tool}: {ratios}")


if __name__ == "__main__":
    sys.exit(main())
