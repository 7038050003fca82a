"""Language identification accuracy per language on real text: the UDHR paragraphs we ship.

    .venv/bin/python bench/lid.py [--min-chars 40] [--json out.json]

For each of the 15 languages: how often lid.176 (+ CLD2 below `cld2_below`) names the right
language, what it says instead, and what the clean stage would do with the document if it carried
the right label: kept as is, or dropped as `lid_mismatch` (a wrong confident prediction outside the
label's confusable group). Caveat: the UDHR is likely part of lid.176's training data, so these are
upper bounds for web text; short paragraphs (< --min-chars characters) are left out.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from data_engine.clean.config import LidConfig
from data_engine.clean.lid import decide, predict
from data_engine.langs import LANGS
from data_engine.sample.corpus import load_udhr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-chars", type=int, default=40)
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    cfg = LidConfig()
    rows, total, correct = {}, 0, 0
    started = time.perf_counter()
    for lang in LANGS:
        paragraphs = [para for section in load_udhr(lang) for para in section if len(para) >= args.min_chars]
        predictions = predict(paragraphs, cfg)
        hits = sum(code == lang for code, _ in predictions)
        wrong = Counter(code for code, _ in predictions if code != lang)
        dropped = sum(decide(lang, code, score, cfg).reason is not None for code, score in predictions)
        rows[lang] = {"paragraphs": len(paragraphs), "accuracy": hits / len(paragraphs),
                      "dropped_by_lid": dropped, "confused_with": dict(wrong.most_common(3))}
        total += len(paragraphs)
        correct += hits
    seconds = time.perf_counter() - started
    print(f"{'lang':5} {'paras':>5} {'accuracy':>8} {'dropped':>7}  confused with")
    for lang, r in rows.items():
        confused = ", ".join(f"{k} {v}" for k, v in r["confused_with"].items())
        print(f"{lang:5} {r['paragraphs']:>5} {r['accuracy']:>8.3f} {r['dropped_by_lid']:>7}  {confused}")
    print(f"all   {total:>5} {correct / total:>8.3f}  ({total / seconds:,.0f} paragraphs/s on one core)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"overall": correct / total, "by_lang": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
