"""Readers for the evaluation sets in their published formats (rows, before any prompt).

SIB-200 (FLORES-200 sentences with topic labels, parallel by `index_id` in every language), XCOPA
and XQuAD as they are kept in `../shared/data` (see its README), and the held-out UDHR sections
the project ships. A missing file is a `DataMissing` naming it, so a suite can skip the task and
say why instead of failing the whole run.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from data_engine.errors import SailyardError

DATA_ENV = "SAILYARD_EVAL_DATA"
SIB200_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
XQUAD_FEWSHOT_ARTICLES = 4
"""XQuAD has one split; its first articles are the shot pool and are never scored."""


class DataMissing(SailyardError):
    """An eval set's files are not where the suite says (the task is skipped, with this reason)."""


def default_data_root() -> Path:
    """`$SAILYARD_EVAL_DATA`, else `../shared/data` beside the checkout (where CI keeps the real sets)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataMissing(f"{path} not found (set {DATA_ENV} or the suite's data_root to the folder holding "
                          f"the eval sets; see README 'Evaluation')")
    return path


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text.replace("\ufeff", "")).strip()


def sib200(root: Path, lang: str, split: str) -> list[dict[str, Any]]:
    """Rows {index_id, category, text} of `<root>/<lang>/<split>.tsv`."""
    path = _need(root / lang / f"{split}.tsv")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    out = []
    for no, row in enumerate(rows, 2):
        if row.get("category") not in SIB200_LABELS or not row.get("text"):
            raise SailyardError(f"{path}:{no}: expected index_id, category (one of SIB-200's 7) and text")
        out.append({"index_id": row["index_id"], "category": row["category"], "text": _clean(row["text"])})
    return out


def xcopa(root: Path, lang: str, split: str) -> list[dict[str, Any]]:
    """Rows {idx, premise, choice1, choice2, question, label} of `<root>/<lang>.<split>.jsonl`."""
    path = _need(root / f"{lang}.{split}.jsonl")
    rows = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("question") not in ("cause", "effect") or rec.get("label") not in (0, 1):
            raise SailyardError(f"{path}:{no}: not an XCOPA record")
        rows.append({**rec, "premise": _clean(rec["premise"]), "choice1": _clean(rec["choice1"]),
                     "choice2": _clean(rec["choice2"])})
    return rows


def xquad(root: Path, lang: str) -> list[dict[str, Any]]:
    """Rows {id, article, context, question, answers} of `<root>/<lang>.json` (SQuAD v1.1 layout)."""
    path = _need(root / f"{lang}.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for article_no, article in enumerate(doc["data"]):
        for para in article["paragraphs"]:
            context = _clean(para["context"])
            for qa in para["qas"]:
                rows.append({"id": qa["id"], "article": article_no, "context": context,
                             "question": _clean(qa["question"]),
                             "answers": tuple(dict.fromkeys(_clean(a["text"]) for a in qa["answers"]))})
    return rows


def udhr_heldout(lang: str) -> list[str]:
    """The held-out UDHR paragraphs of `lang` (the sample corpus never uses them)."""
    from data_engine.sample.corpus import heldout_udhr

    return [_clean(p) for section in heldout_udhr(lang) for p in section if p.strip()]
