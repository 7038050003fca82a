"""Near dedup side by side: sailyard's jobs, datatrove, text-dedup and rensa on one generated corpus.

    .venv/bin/python bench/dedup.py [--docs 25000,100000] [--tools sailyard,datatrove,text-dedup,rensa]
                                    [--peers-python bench/.venv-peers/bin/python] [--work DIR] [--out bench/results]
    make bench-dedup      # the same at 25k and 100k (creates bench/.venv-peers for the peers)

Why this shape: issue 17's outside user ran the README's two commands on a web-like corpus it had never
seen and compared the result with text-dedup, rensa and datatrove in the same run. This does the same on
`bench/corpus.py`'s corpus (long web-like pages in 15 languages, 3.15% of them originals of planted
near-duplicate clusters, JSONL in 8 files) at each `--docs` size:

- **sailyard** the way a user runs it: `.venv/bin/spark-submit --driver-memory 1g jobs/ingest.py --input
  <docs> --lake <lake>`, then `... jobs/dedup.py --lake <lake> --stages near`, each timed on its own (wall
  seconds including the JVM's start) and together; the clusters come from the lake's `drops` table (stage
  `near`: `doc_id`, `dup_of`, `cluster_id`), mapped back to the corpus's ids through `docs_raw.meta`;
- **datatrove 0.10.1**: its four-stage MinHash pipeline (LocalPipelineExecutor, 2 workers, JsonlReader,
  its default English word tokenizer), clusters from `minhash_cluster_id`;
- **text-dedup 0.4.0**: `python -m text_dedup.minhash --path json --data_files <docs>/*.jsonl` (`num_proc`
  2), clusters from its union-find, kept documents from its output;
- **rensa 0.5.0**: `RMinHashDeduplicator(threshold, num_perm, use_lsh=True).add_pairs((id, tokens))` as
  its README shows, tokens being word 5-grams of `text.split()` (`--rensa-ngram 1`: the README's
  unigrams), each removed document joined to the kept ones it duplicates (`get_duplicate_sets`).

Every tool reads the JSONL itself (end to end), uses 5-gram shingles, 20 bands × 6 rows (120
permutations) and threshold 0.8. Peak RSS is summed over each command's whole process tree (JVM, Python
workers, multiprocessing pools), sampled every 0.2 s. Scores against the planted truth (`bench/corpus.py`):
pair P/R/F1 of "same cluster" over all documents, removal F1 (each cluster of c should lose c-1) and the
worst language's pair F1. The peers run in their own venv (they need numpy 2; the project pins numpy < 2).
Results: printed, and `bench/results/dedup.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import Truth, ensure_corpus, load_truth, score_run  # noqa: E402

TOOLS = ("sailyard", "datatrove", "text-dedup", "rensa")

DATATROVE_RUN = textwrap.dedent("""
    import glob, gzip, json, sys
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    if __name__ == "__main__":
        corpus, work, out, bands, rows, workers = sys.argv[1:7]
        bands, rows, workers = int(bands), int(rows), int(workers)
        cfg = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows,
                            hash_config=HashConfig(precision=64))
        reader = lambda: JsonlReader(corpus, text_key="text", id_key="doc_id")
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
        clusters, removed = {}, []
        for kind in ("kept", "removed"):
            for path in glob.glob(work + "/" + kind + "/*"):
                with gzip.open(path, "rt") as handle:
                    for line in handle:
                        doc = json.loads(line)
                        cid = doc["metadata"].get("minhash_cluster_id", -1)
                        if cid != -1:
                            clusters[doc["id"]] = str(cid)
                        if kind == "removed":
                            removed.append(doc["id"])
        json.dump({"clusters": clusters, "removed": removed}, open(out, "w"))
""")

TEXTDEDUP_RUN = textwrap.dedent("""
    import glob, json, pickle, subprocess, sys
    from datasets import load_from_disk
    corpus, work, out, bands, rows, workers = sys.argv[1:7]
    subprocess.run([sys.executable, "-m", "text_dedup.minhash", "--path", "json",
                    "--data_files", corpus + "/*.jsonl", "--split", "train", "--cache_dir", work + "/cache",
                    "--output", work + "/out", "--column", "text", "--idx_column", "doc_id",
                    "--ngram", "5", "--num_perm", str(int(bands) * int(rows)), "--b", bands, "--r", rows,
                    "--threshold", "0.8", "--num_proc", workers, "--debug"], check=True, cwd=work)
    uf = pickle.load(open(work + "/out/uf.pkl", "rb"))  # keys are doc_ids (--idx_column)
    clusters = {d: str(uf.find(d)) for d in list(uf.parent)}
    kept = set(load_from_disk(work + "/out")["doc_id"])
    ids = []
    for path in sorted(glob.glob(corpus + "/*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            ids += [json.loads(line)["doc_id"] for line in handle]
    json.dump({"clusters": clusters, "removed": [d for d in ids if d not in kept]}, open(out, "w"))
""")

RENSA_RUN = textwrap.dedent("""
    import glob, json, sys
    from rensa import RMinHashDeduplicator
    corpus, work, out, bands, rows, ngram = sys.argv[1:7]
    bands, rows, ngram = int(bands), int(rows), int(ngram)

    def tokens(text):
        words = text.split()
        if ngram == 1 or len(words) < ngram:
            return words or [text]
        return [" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]

    docs = []
    for path in sorted(glob.glob(corpus + "/*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                rec = json.loads(line)
                docs.append((rec["doc_id"], rec["text"]))
    dedup = RMinHashDeduplicator(threshold=0.8, num_perm=bands * rows, use_lsh=True, num_bands=bands)
    keep = dedup.add_pairs((doc_id, tokens(text)) for doc_id, text in docs)
    removed = [(doc_id, text) for (doc_id, text), k in zip(docs, keep) if not k]
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for (doc_id, _), matches in zip(removed, dedup.get_duplicate_sets([tokens(t) for _, t in removed])):
        for other in matches:
            a, b = find(doc_id), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members = set(parent) | set(parent.values())
    json.dump({"clusters": {d: find(d) for d in members}, "removed": [d for d, _ in removed]}, open(out, "w"))
""")


def _tree_rss(root) -> int:  # noqa: ANN001
    import psutil

    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def timed(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run `cmd`; return wall seconds, peak RSS (bytes) and its stdout (stderr and stdout also go to `log`,
    so a failure can be read in full). Peak RSS is the larger of the process tree's summed RSS, sampled
    every 0.1 s (JVM + Python workers together), and the kernel's high-water mark of the largest single
    process (`wait4`), which a run shorter than a sample still has."""
    import psutil

    samples: list[int] = []
    done = threading.Event()
    start = time.perf_counter()
    with open(log, "w") as err, open(log.with_suffix(".stdout"), "w+") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        root = psutil.Process(proc.pid)

        def watch() -> None:
            while not done.wait(0.1):
                try:
                    samples.append(_tree_rss(root))
                except psutil.Error:
                    pass

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        watcher.join(timeout=1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        tail = (log.read_text()[-2000:] + "\n" + stdout[-1000:]).strip()
        raise RuntimeError(f"{Path(cmd[0]).name} … exited {proc.returncode}; see {log}:\n{tail}")
    return wall, max(max(samples, default=0), usage.ru_maxrss * 1024), stdout


def _summary(stdout: str) -> dict:
    """The job's JSON summary: the last line of its stdout."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    if summary.get("status") != "ok":
        raise RuntimeError(f"job summary not ok: {lines[-1] if lines else '(no output)'}")
    return summary


def _read_delta(path: Path, columns: list[str]):  # noqa: ANN202
    """A Delta table's columns as pyarrow (SubTreeFileSystem: no abort at exit, see shared/notes/delta-rs.md)."""
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table(
        columns=columns, filesystem=pafs.SubTreeFileSystem(str(path), pafs.LocalFileSystem()))


def sailyard_clusters(lake: Path) -> tuple[dict[str, str], list[str], int]:
    """Clusters and removed documents of the near stage in corpus ids, and docs_dedup's row count."""
    raw = _read_delta(lake / "docs_raw", ["doc_id", "meta"])
    to_corpus = {d: json.loads(m)["doc_id"] for d, m in zip(raw.column("doc_id").to_pylist(),
                                                           raw.column("meta").to_pylist(), strict=True)}
    drops = _read_delta(lake / "drops", ["doc_id", "stage", "dup_of", "cluster_id"]).to_pylist()
    clusters: dict[str, str] = {}
    removed = []
    for row in drops:
        if row["stage"] != "near":
            continue
        removed.append(to_corpus[row["doc_id"]])
        clusters[to_corpus[row["doc_id"]]] = row["cluster_id"]
        clusters[to_corpus[row["dup_of"]]] = row["cluster_id"]
    from deltalake import DeltaTable

    return clusters, removed, DeltaTable(str(lake / "docs_dedup")).count()


def run_sailyard(docs_dir: Path, work: Path, args: argparse.Namespace, env: dict[str, str], n: int,
                 truth: Truth) -> list[dict]:
    lake = work / "lake"
    submit = [str(ROOT / ".venv" / "bin" / "spark-submit"), "--driver-memory", args.driver_memory]
    wall_i, rss_i, out_i = timed([*submit, str(ROOT / "jobs" / "ingest.py"), "--input", str(docs_dir),
                                  "--lake", str(lake)], env, work, work / "ingest.log")
    ingest = _summary(out_i)
    wall_n, rss_n, out_n = timed([*submit, str(ROOT / "jobs" / "dedup.py"), "--lake", str(lake),
                                  "--stages", "near"], env, work, work / "dedup.log")
    near = _summary(out_n)
    clusters, removed, kept = sailyard_clusters(lake)
    if kept + len(removed) != n:
        print(f"warning: docs_dedup {kept} + removed {len(removed)} != {n} documents", file=sys.stderr)
    scores = score_run(clusters, removed, truth)
    rows = [_row("sailyard ingest", n, wall_i, rss_i, None, job_seconds=ingest.get("seconds"),
                 kept=ingest.get("kept"), quarantined=ingest.get("quarantined")),
            _row("sailyard near", n, wall_n, rss_n, scores, removed=len(removed), job_seconds=near.get("seconds")),
            _row("sailyard ingest+near", n, wall_i + wall_n, max(rss_i, rss_n), scores, removed=len(removed))]
    return rows


def run_peer(tool: str, docs_dir: Path, work: Path, args: argparse.Namespace, env: dict[str, str], n: int,
             truth: Truth) -> list[dict]:
    out = work / "result.json"
    script = work / "run.py"
    b, r = str(args.bands), str(args.rows)
    if tool == "datatrove":
        script.write_text(DATATROVE_RUN)
        cmd = [args.peers_python, str(script), str(docs_dir), str(work), str(out), b, r, "2"]
    elif tool == "text-dedup":
        script.write_text(TEXTDEDUP_RUN)
        cmd = [args.peers_python, str(script), str(docs_dir), str(work), str(out), b, r, "2"]
    elif tool == "rensa":
        script.write_text(RENSA_RUN)
        cmd = [args.peers_python, str(script), str(docs_dir), str(work), str(out), b, r, str(args.rensa_ngram)]
    else:
        raise SystemExit(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")
    wall, rss, _ = timed(cmd, env, work, work / "run.log")
    result = json.loads(out.read_text())
    scores = score_run(result["clusters"], result["removed"], truth)
    return [_row(tool, n, wall, rss, scores, removed=len(result["removed"]))]


def _row(tool: str, n: int, seconds: float, rss: int, scores: dict | None, **extra) -> dict:  # noqa: ANN003
    row = {"tool": tool, "docs": n, "seconds": round(seconds, 1), "docs_per_s": round(n / seconds),
           "peak_rss_mb": round(rss / 2**20)}
    row.update(scores or {})
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


def targets(rows: list[dict]) -> list[dict]:
    """Issue 17's bars, checked on each size's rows: near ≥ 3,000 docs/s, ingest ≥ 8,000 docs/s, ingest +
    near at least text-dedup's docs/s, removal F1 ≥ 0.99, every language's pair F1 ≥ 0.9."""
    out = []
    for n in sorted({r["docs"] for r in rows}):
        by = {r["tool"]: r for r in rows if r["docs"] == n and "error" not in r}
        near, ingest, both, td = (by.get(k) for k in ("sailyard near", "sailyard ingest", "sailyard ingest+near",
                                                     "text-dedup"))
        checks = []
        if near:
            checks += [("near docs/s >= 3000", near["docs_per_s"], near["docs_per_s"] >= 3000),
                       ("removal F1 >= 0.99", near["removal_f1"], near["removal_f1"] >= 0.99),
                       (f"worst language pair F1 >= 0.9 ({near['worst_lang']})", near["worst_lang_pair_f1"],
                        near["worst_lang_pair_f1"] >= 0.9)]
        if ingest:
            checks.append(("ingest docs/s >= 8000", ingest["docs_per_s"], ingest["docs_per_s"] >= 8000))
        if both and td:
            checks.append((f"ingest+near docs/s >= text-dedup's ({td['docs_per_s']})", both["docs_per_s"],
                           both["docs_per_s"] >= td["docs_per_s"]))
        out += [{"docs": n, "check": c, "value": v, "ok": ok} for c, v, ok in checks]
    return out


def print_table(rows: list[dict], checks: list[dict]) -> None:
    head = (f"{'tool':<22}{'docs':>8}{'seconds':>9}{'docs/s':>8}{'RSS MB':>8}{'pair P':>8}{'pair R':>8}"
            f"{'pair F1':>8}{'rm F1':>7}  worst lang pair F1")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['tool']:<22}{r['docs']:>8}   failed: {r['error'].splitlines()[0][:90]}")
            continue
        if "pair_f1" not in r:
            print(f"{r['tool']:<22}{r['docs']:>8}{r['seconds']:>9}{r['docs_per_s']:>8}{r['peak_rss_mb']:>8}")
            continue
        print(f"{r['tool']:<22}{r['docs']:>8}{r['seconds']:>9}{r['docs_per_s']:>8}{r['peak_rss_mb']:>8}"
              f"{r['pair_precision']:>8.3f}{r['pair_recall']:>8.3f}{r['pair_f1']:>8.3f}{r['removal_f1']:>7.3f}"
              f"  {r['worst_lang_pair_f1']:.3f} ({r['worst_lang']})")
    if checks:
        print("\nissue 17 targets:")
        for c in checks:
            print(f"  {c['docs']:>7} docs  {'ok  ' if c['ok'] else 'MISS'}  {c['check']}: {c['value']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="25000,100000", help="corpus sizes, comma-separated")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--bands", type=int, default=20)
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--driver-memory", default="1g", help="spark-submit --driver-memory (Spark's default: 1g)")
    p.add_argument("--rensa-ngram", type=int, default=5, help="rensa's tokens: word n-grams of text.split()")
    p.add_argument("--peers-python", default=str(ROOT / "bench" / ".venv-peers" / "bin" / "python"))
    p.add_argument("--work", default=os.environ.get("SAILYARD_BENCH_WORK", "/tmp/sailyard-bench-dedup"),
                   help="corpora (kept and reused) and each run's files (replaced)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        p.error(f"unknown tool(s) {unknown}; known: {', '.join(TOOLS)}")
    # absolute (the peers run in their own work folders), but not resolved: the venv's python is a link
    args.peers_python = os.path.abspath(args.peers_python)
    if any(t != "sailyard" for t in tools) and not Path(args.peers_python).exists():
        p.error(f"{args.peers_python} not found: `make bench/.venv-peers/.installed` makes the peers' venv")
    sizes = [int(s) for s in args.docs.split(",")]
    work_root = Path(args.work)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SAILYARD_PARENT_RUN_ID")}
    rows: list[dict] = []
    corpora = {}
    for n in sizes:
        corpus_dir = work_root / f"corpus-{n}-s{args.seed}"
        t0 = time.perf_counter()
        manifest = ensure_corpus(corpus_dir, n, seed=args.seed)
        corpora[n] = {k: v for k, v in manifest.items() if k != "parts"}
        print(f"corpus {corpus_dir}: {n:,} documents, {manifest['clusters']:,} clusters, "
              f"{sum(x['bytes'] for x in manifest['parts']) / 1e6:.0f} MB ({time.perf_counter() - t0:.1f} s)",
              flush=True)
        truth = load_truth(corpus_dir)
        for tool in tools:
            work = work_root / f"run-{n}" / tool
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                if tool == "sailyard":
                    new = run_sailyard(corpus_dir / "docs", work, args, env, n, truth)
                else:
                    new = run_peer(tool, corpus_dir / "docs", work, args, env, n, truth)
            except Exception as exc:  # noqa: BLE001 - one tool failing must not lose the others' rows
                print(f"{tool} at {n:,} docs failed: {exc}", file=sys.stderr, flush=True)
                new = [{"tool": tool, "docs": n, "error": str(exc)[:2000]}]
            for row in new:
                print(json.dumps({k: v for k, v in row.items() if k != "pair_f1_by_lang"}), flush=True)
            rows += new
    checks = targets(rows)
    result = {"rows": rows, "targets": checks, "corpora": corpora,
              "settings": {"bands": args.bands, "rows": args.rows, "threshold": 0.8, "ngram": 5,
                           "driver_memory": args.driver_memory, "rensa_ngram": args.rensa_ngram},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M")}}
    (out_dir / "dedup.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(rows, checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
