"""Ingest benchmark: `spark-submit --driver-memory 1g jobs/ingest.py` on a JSONL corpus.

    python bench/ingest.py [--corpus DIR] [--docs 100000] [--files 8] [--doc-bytes 3000]
                           [--runs 3] [--reingest] [--master local[2]] [--keep-lake DIR]

Without `--corpus` it builds (once, then reuses) a web-like corpus in
`$TMPDIR/sailyard-bench-ingest-<docs>-<files>`: `--docs` JSON lines with about `--doc-bytes` UTF-8
bytes of text each (≈ 3.3 KB a line) in 15 languages (real UDHR paragraphs around a unique
per-page line, mixed language tags, a url, an `id` and one extra field), spread over `--files`
files. Each run ingests it into a fresh lake under Spark's default 1 GB driver heap
(the budget every job must fit) and prints wall seconds of the whole spark-submit process (JVM
start included), the job's own `seconds`, the CPU seconds of the whole process tree (JVM, Python
driver, Python workers: the figure least disturbed by other work on a shared machine), documents
per second, the peak RSS summed over the process tree, and the 1-minute load average at the end
(above the core count, other work competed for the CPUs). `--reingest` also times ingesting the
same files a second time into the same lake (must add nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_corpus(out: Path, docs: int, files: int, doc_bytes: int, seed: int = 17) -> Path:
    """Deterministic JSONL corpus; rebuilt only when its parameters change."""
    from data_engine.langs import LANGS
    from data_engine.sample.corpus import _TAG_FORMS, load_udhr

    stamp = out / "_params.json"
    params = {"docs": docs, "files": files, "doc_bytes": doc_bytes, "seed": seed, "v": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    paragraphs = {lang: [p for s in load_udhr(lang) for p in s if p.strip()] for lang in LANGS}
    handles = [open(out / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]  # noqa: SIM115
    try:
        for n in range(docs):
            lang = LANGS[n % len(LANGS)]
            paras = paragraphs[lang]
            lines = [f"Page {n} of site{n % 997}.example — {rng.random():.12f}"]
            size = len(lines[0].encode())
            while size < doc_bytes:
                p = paras[rng.randrange(len(paras))]
                lines.append(p)
                size += len(p.encode()) + 1
            record = {"text": "\n".join(lines), "url": f"https://site{n % 997}.example/{lang}/{n}",
                      "lang": rng.choice(_TAG_FORMS[lang]), "id": n, "crawl": "bench-2026"}
            handles[n % files].write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        for h in handles:
            h.close()
    stamp.write_text(json.dumps(params))
    return out


def _peak_rss(proc: subprocess.Popen, samples: list[int]) -> None:
    """RSS summed over the process and its descendants, every 0.2 s until it exits."""
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


def ingest_once(corpus: Path, lake_dir: Path, master: str, driver_memory: str) -> dict:
    cmd = [str(ROOT / ".venv" / "bin" / "spark-submit"), "--master", master,
           "--driver-memory", driver_memory, "jobs/ingest.py", "--input", str(corpus),
           "--lake", str(lake_dir), "--source", "bench"]
    env = dict(os.environ, SAILYARD_SPARK_LOG_LEVEL="ERROR")
    samples: list[int] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_peak_rss, args=(proc, samples), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    wall = time.time() - start
    watcher.join(timeout=1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or summary.get("status") != "ok":
        raise RuntimeError(f"ingest failed ({proc.returncode}): {stdout[-2000:]}\n{stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "job_s": summary["seconds"], "cpu_s": round(cpu, 1), "kept": summary["kept"],
            "in": summary["in"], "skipped_files": summary["skipped_files"],
            "peak_rss_mb": round(max(samples, default=0) / 2**20), "load": round(os.getloadavg()[0], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, help="an existing JSONL file or directory (default: build one)")
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--doc-bytes", type=int, default=3000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reingest", action="store_true", help="also time a second ingest of the same files")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--keep-lake", type=Path, help="leave the last run's lake here")
    args = p.parse_args(argv)

    corpus = args.corpus or build_corpus(
        Path(tempfile.gettempdir()) / f"sailyard-bench-ingest-{args.docs}-{args.files}",
        args.docs, args.files, args.doc_bytes)
    size = sum(f.stat().st_size for f in ([corpus] if corpus.is_file() else corpus.rglob("*"))
               if f.is_file() and not f.name.startswith(("_", ".")))
    print(f"corpus {corpus}: {size / 1e6:.0f} MB; master {args.master}, driver heap {args.driver_memory}",
          flush=True)
    print(f"{'run':<12}{'wall s':>8}{'job s':>8}{'CPU s':>8}{'docs/s wall':>13}{'docs/s job':>12}{'RSS MB':>8}"
          f"  load", flush=True)
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            lake_dir = Path(tmp) / "lake"
            runs = [("ingest", ingest_once(corpus, lake_dir, args.master, args.driver_memory))]
            if args.reingest:
                again = ingest_once(corpus, lake_dir, args.master, args.driver_memory)
                if again["in"] != 0:
                    raise RuntimeError(f"re-ingest added records: {again}")
                runs.append(("reingest", again))
            if args.keep_lake and i == args.runs - 1:
                shutil.rmtree(args.keep_lake, ignore_errors=True)
                shutil.copytree(lake_dir, args.keep_lake)
        for name, r in runs:
            n = runs[0][1]["kept"]
            results.append({"run": name, **r})
            print(f"{name + ' ' + str(i + 1):<12}{r['wall_s']:>8}{r['job_s']:>8}{r['cpu_s']:>8}"
                  f"{n / r['wall_s']:>13.0f}{n / r['job_s']:>12.0f}{r['peak_rss_mb']:>8}  {r['load']}", flush=True)
    print(json.dumps({"bench": "ingest", "corpus_mb": round(size / 1e6), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
