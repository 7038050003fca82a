"""Write the bundled sample corpus (15 languages, with duplicates and bad records) to a folder.

    python jobs/sample.py --out <dir> [--docs-per-lang 40] [--seed 2025]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--docs-per-lang", type=int, default=40)
    p.add_argument("--seed", type=int, default=2025)
    args = p.parse_args(argv)

    def work() -> dict:
        import dataclasses

        from data_engine.sample.corpus import build_sample

        stats = build_sample(args.out, docs_per_lang=args.docs_per_lang, seed=args.seed)
        return {"out": args.out, **dataclasses.asdict(stats)}

    from data_engine.jobrun import run_job

    return run_job("sample", work)


if __name__ == "__main__":
    sys.exit(main())
