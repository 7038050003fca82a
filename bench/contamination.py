"""Throughput of the contamination audit: items × documents per second and documents per second.

    .venv/bin/python bench/contamination.py [--docs 5000] [--items 300] [--work /tmp/bench-contamination]
        [--sib /work/shared/data/sib200] [--repeat 2]

Training side: `build_background(--docs)` web-like pages in all 15 languages (6–18 UDHR
sentences each, site header and footer, ~12% edited copies), as `docs_curated` (written once, not
timed). Items: `--items` spread over the 15 languages, 90% FLORES-200 sentences from SIB-200
(absent from the pages unless planted; one in ten is planted into a page) and 10% lines taken
from the pages themselves (contaminated by construction: UDHR sentences recur across pages, so
these hit many documents), so the join has real hits to attribute.
Each repeat runs the audit (plan + commit of `contamination`, no MLflow) and prints its seconds;
the last run also decontaminates, timed alone. Spark's start-up is reported, never counted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build(n_docs: int, n_items: int, sib: Path, seed: int = 3) -> tuple[list[tuple[str, str, str, str]], list]:
    from data_engine.contamination import Item, normalise
    from data_engine.langs import LANGS
    from data_engine.sample.labelled import build_background, sib200_sentences

    rng = random.Random(seed)
    docs = build_background(n_docs)
    rows = [[d.doc_id, d.lang, "bench", d.text] for d in docs]
    by_lang: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        by_lang.setdefault(d.lang, []).append(i)
    items = []
    per_lang = max(2, n_items // len(LANGS))
    for lang in LANGS:
        flores = sib200_sentences(sib, lang)[:per_lang - max(1, per_lang // 10)]
        for j, text in enumerate(flores):
            items.append(Item("flores", lang, str(j), text))
            if j % 10 == 0:  # planted into a page of its language
                row = rows[rng.choice(by_lang[lang])]
                row[3] += "\n" + text
        for j in range(per_lang - len(flores)):
            lines = [x for x in rows[rng.choice(by_lang[lang])][3].split("\n")[1:-1] if normalise(x)]
            items.append(Item("web", lang, str(j), rng.choice(lines)))
    return [tuple(r) for r in rows], items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--work", default="/tmp/bench-contamination")
    p.add_argument("--sib", default="/work/shared/data/sib200")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()

    from data_engine import lake
    from data_engine.contamination import ContaminationConfig, plan_audit
    from data_engine.spark import get_spark
    from data_engine.stage import commit_plan

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    lake_dir = str(work / "lake")
    t0 = time.perf_counter()
    spark = get_spark("bench-contamination")
    started = time.perf_counter() - t0
    rows, items = build(args.docs, args.items, Path(args.sib))
    chars = sum(len(r[3]) for r in rows)
    lake.write_table(spark.createDataFrame(rows, "doc_id string, lang string, source string, text string"),
                     lake_dir, "docs_curated", mode="error")
    cfg = ContaminationConfig()
    print(f"{len(rows):,} documents ({chars / 1e6:.1f} M characters), {len(items)} items; "
          f"Spark start {started:.1f} s", flush=True)
    for i in range(args.repeat):
        t = time.perf_counter()
        plan = plan_audit(spark, lake_dir, items, cfg)
        commit_plan(lake_dir, plan)
        s = time.perf_counter() - t
        print(f"audit {i + 1}: {s:.1f} s  {len(items) * len(rows) / s:,.0f} items×docs/s  {len(rows) / s:,.0f} docs/s  "
              f"contaminated {plan.summary['contaminated_any']} (any) {plan.summary['contaminated_share']} (share), "
              f"{plan.summary['hit_pairs']} item-doc pairs", flush=True)
    t = time.perf_counter()
    plan = plan_audit(spark, lake_dir, items, cfg, decontaminate=True)
    versions = commit_plan(lake_dir, plan)
    s = time.perf_counter() - t
    print(f"audit + decontaminate: {s:.1f} s  {len(rows) / s:,.0f} docs/s  dropped {plan.counts.dropped:,} "
          f"(kept {plan.counts.kept:,}); tables {versions}")


if __name__ == "__main__":
    main()
