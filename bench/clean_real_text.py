"""How much real text the cleaning rules keep, and how much web junk they remove, per language.

    .venv/bin/python bench/clean_real_text.py [--sib-dir ../shared/data/sib200] [--lid] [--json out.json]

Real text: the shipped UDHR and SIB-200's FLORES-200 sentences as web-length pages
(`labelled.real_documents`); junk: `labelled.junk_documents`, 10 pages of each kind per language.
Everything goes through the clean job itself (`data_engine.clean.run.clean` on a local Delta
lake). Language identification is off unless `--lid`: the figures are the heuristic rules' own.
The same measurement is asserted by tests/data_engine/clean/test_real_text.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from data_engine import lake
from data_engine.clean.config import CleanConfig, LidConfig
from data_engine.clean.run import clean
from data_engine.langs import LANGS
from data_engine.sample.labelled import JUNK_KINDS, junk_documents, real_documents
from data_engine.spark import get_spark

DEFAULT_SIB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sib200"


def measure(spark, lake_dir: str, sib_dir: Path | None, lid: bool) -> dict[str, dict]:
    docs = [d for lang in LANGS for d in real_documents(lang, sib_dir=sib_dir)]
    docs += [d for lang in LANGS for d in junk_documents(lang, 10 * len(JUNK_KINDS))]
    rows = [(d.doc_id, d.lang, "bench", d.text) for d in docs]
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, source string, text string"),
                     lake_dir, "docs_raw", mode="error")
    clean(spark, lake_dir, CleanConfig(lid=LidConfig(enabled=lid)))
    reasons = {r["doc_id"]: r["reason"] for r in lake.read_arrow(lake_dir, "drops").to_pylist()}
    out: dict[str, dict] = defaultdict(lambda: {"real": 0, "real_kept": 0, "junk": 0, "junk_removed": 0,
                                                 "real_dropped_by": Counter(), "junk_missed": Counter()})
    for d in docs:
        r, reason = out[d.lang], reasons.get(d.doc_id)
        if "-junk-" in d.doc_id:
            r["junk"] += 1
            r["junk_removed"] += reason is not None
            if reason is None:
                r["junk_missed"][d.origin] += 1
        else:
            r["real"] += 1
            r["real_kept"] += reason is None
            if reason is not None:
                r["real_dropped_by"][reason] += 1
    return dict(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sib-dir", type=Path, default=DEFAULT_SIB)
    p.add_argument("--lid", action="store_true", help="run language identification too (default: rules only)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    sib = args.sib_dir if (args.sib_dir / "eng").is_dir() else None
    if sib is None:
        print(f"SIB-200 not found at {args.sib_dir}: UDHR pages only")
    spark = get_spark("bench-clean-real-text", conf={"spark.master": "local[2]", "spark.sql.shuffle.partitions": "4"})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(spark, str(Path(tmp) / "lake"), sib, args.lid)
    seconds = time.perf_counter() - started
    print(f"{'lang':5} {'real':>5} {'kept %':>7} {'junk':>5} {'removed %':>9}  real dropped by / junk missed")
    for lang in LANGS:
        r = rows[lang]
        why = ", ".join(f"{k} {v}" for k, v in r["real_dropped_by"].most_common())
        missed = ", ".join(f"{k} {v}" for k, v in r["junk_missed"].most_common())
        print(f"{lang:5} {r['real']:>5} {100 * r['real_kept'] / r['real']:>7.1f} {r['junk']:>5} "
              f"{100 * r['junk_removed'] / r['junk']:>9.1f}  {why or '-'} / {missed or '-'}")
    real, kept = sum(r["real"] for r in rows.values()), sum(r["real_kept"] for r in rows.values())
    junk, removed = sum(r["junk"] for r in rows.values()), sum(r["junk_removed"] for r in rows.values())
    print(f"all   {real:>5} {100 * kept / real:>7.1f} {junk:>5} {100 * removed / junk:>9.1f}  ({seconds:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({lang: {k: dict(v) if isinstance(v, Counter) else v for k, v in r.items()}
                       for lang, r in rows.items()}, handle, indent=2)
    spark.stop()


if __name__ == "__main__":
    main()
