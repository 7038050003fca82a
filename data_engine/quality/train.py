"""Train one language's quality classifier: fastText, positives given, negatives from the lake.

Sailor2 trained a fastText classifier per language on ~10K positives (high-quality English
machine-translated into the language) against ~10K documents of that language's raw web crawl,
then kept each language's top 10–20%. Here the positives are whatever curated text the user gives;
negatives are a reproducible sample (by a seeded hash of doc_id) of the language's `docs_clean`.
A held-out fifth of each class gives precision, recall and AUC; model and metrics go to MLflow,
and the model is registered as `<prefix>-<lang>` so scoring can ask for the latest one.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_engine import lake
from data_engine.errors import ConfigError, InputError
from data_engine.langs import UNKNOWN
from data_engine.quality.config import QualityTrainConfig
from data_engine.quality.features import LABEL_HIGH, LABEL_LOW, fasttext_lines
from data_engine.tables import DOCS_CLEAN, DOCS_RAW

MODEL_FILE = "quality.bin"
META_FILE = "meta.json"


@dataclass
class TrainResult:
    lang: str
    positives: int
    negatives: int
    metrics: dict[str, float]
    model_dir: Path
    negatives_table: str
    negatives_version: int


def _starts_with(handle: Any, char: str) -> bool:
    """Whether the file's first non-blank character is `char`; the handle is rewound."""
    head = handle.read(4096).lstrip()
    handle.seek(0)
    return head.startswith(char)


def _text_of(record: Any, file: Path, where: int) -> str | None:
    """A record's `text`: a string, or None (no text: skipped). Anything but an object is an error."""
    if not isinstance(record, dict):
        raise InputError(f"positives file {file}, record {where}: expected a JSON object with a `text` field, "
                         f"got {type(record).__name__}")
    value = record.get("text")
    return value if isinstance(value, str) and value.strip() else None


def read_positives(path: str | Path, limit: int, seed: int) -> list[str]:
    """Texts from a .jsonl/.json/.ndjson(.gz) file (JSON lines or one array of objects; field `text`,
    objects without one skipped, anything but an object an error), a .txt(.gz)
    file (one document per line), a Parquet file (column `text`), or a directory of those (other
    files ignored). A reproducible sample of `limit`; unreadable input is an InputError naming the
    file and line."""
    import gzip

    root = Path(path)
    if not root.exists():
        raise InputError(f"positives path {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    texts: list[str] = []
    for file in files:
        name = file.name.lower()
        if name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                column = pq.read_table(file, columns=["text"]).column("text")
            except (pa.ArrowException, KeyError, OSError) as exc:
                raise InputError(f"positives file {file}: cannot read a `text` column ({exc})") from exc
            texts += [t for t in column.to_pylist() if isinstance(t, str) and t.strip()]
            continue
        known = (".jsonl", ".json", ".ndjson", ".txt", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".txt.gz")
        if root.is_dir() and not name.endswith(known):
            continue  # README.md, _SUCCESS, .crc files beside the data
        is_json = ".json" in name or ".ndjson" in name
        opener = gzip.open if name.endswith(".gz") else open
        try:
            # utf-8-sig: a byte-order mark (Windows editors) is not part of the first document
            with opener(file, "rt", encoding="utf-8-sig") as handle:  # type: ignore[operator]
                if is_json and _starts_with(handle, "["):  # one JSON array of records
                    try:
                        records = json.load(handle)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"positives file {file}: not a JSON array ({exc.msg}, line "
                                         f"{exc.lineno})") from exc
                    if not isinstance(records, list):
                        raise InputError(f"positives file {file}: expected JSON lines or one array of objects")
                    texts += [t for t in (_text_of(r, file, i) for i, r in enumerate(records, 1)) if t]
                    continue
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    if not is_json:
                        texts.append(line.rstrip("\n"))
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"positives file {file}, line {line_no}: not JSON ({exc.msg})") from exc
                    value = _text_of(record, file, line_no)
                    if value:
                        texts.append(value)
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise InputError(f"positives file {file}: unreadable ({exc})") from exc
    if not texts:
        raise InputError(f"no positive texts found in {root}")
    random.Random(seed).shuffle(texts)
    return texts[:limit]


def sample_negatives(spark: Any, lake_dir: str, table: str, lang: str, limit: int, seed: int) -> tuple[list[str], int]:
    """A seeded-hash sample of the language's documents: the same rows for the same table version."""
    from pyspark.sql import functions as F

    source = lake.read_table(spark, lake_dir, table)
    rows = (source.df.where(F.col("lang") == lang)
            .select("text", F.xxhash64("doc_id", F.lit(seed)).alias("_h"))
            .orderBy("_h").limit(limit).collect())  # bounded by `limit`: a sample, not the table
    return [r.text for r in rows], source.version


def _split(texts: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = max(1, int(round(len(texts) * holdout)))
    return [texts[i] for i in order[cut:]], [texts[i] for i in order[:cut]]


def evaluate(model: Any, positives: list[str], negatives: list[str], max_chars: int) -> dict[str, float]:
    """Precision and recall of "high quality" at P ≥ 0.5, and ROC AUC of the score."""
    from sklearn.metrics import roc_auc_score

    scores = score_texts(model, positives + negatives, max_chars)
    truth = [1] * len(positives) + [0] * len(negatives)
    predicted = [s >= 0.5 for s in scores]
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    precision = tp / max(1, sum(predicted))
    recall = tp / max(1, len(positives))
    return {"auc": float(roc_auc_score(truth, scores)), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def score_texts(model: Any, texts: list[str], max_chars: int) -> list[float]:
    """P(high quality) per text."""
    labels, probs = model.predict(fasttext_lines(texts, max_chars), k=2)
    return [float(dict(zip(lab, pr, strict=True)).get(LABEL_HIGH, 0.0)) for lab, pr in zip(labels, probs, strict=True)]


def train_quality(spark: Any, lake_dir: str, lang: str, positives_path: str | Path,
                  cfg: QualityTrainConfig = QualityTrainConfig(), *, out_dir: str | Path | None = None) -> TrainResult:
    import fasttext

    from data_engine.clean.normalize import clean_text

    if lang == UNKNOWN:
        raise ConfigError("a quality classifier needs a language; 'und' documents have none")
    # Both classes go through the clean stage's normalisation, so the model cannot learn
    # artefacts only one side has (zero-width spaces, soft hyphens in the given positives).
    positives = [clean_text(t) for t in read_positives(positives_path, cfg.max_positives, cfg.seed)]
    positives = [t for t in positives if t]
    table = cfg.negatives_table or lake.first_existing(lake_dir, (DOCS_CLEAN, DOCS_RAW),
                                                       purpose="sample negatives from")
    negatives, version = sample_negatives(spark, lake_dir, table, lang, cfg.max_negatives, cfg.seed)
    negatives = [t for t in (clean_text(t) for t in negatives) if t]
    if min(len(negatives), len(positives)) < max(2, cfg.min_examples):
        raise ConfigError(f"quality classifier for {lang!r} needs at least {max(2, cfg.min_examples)} positives and "
                          f"as many negatives (quality.min_examples); got "
                          f"{len(positives)} positives and {len(negatives)} negatives from "
                          f"{table} v{version}")
    pos_train, pos_test = _split(positives, cfg.holdout, cfg.seed)
    neg_train, neg_test = _split(negatives, cfg.holdout, cfg.seed + 1)
    model_dir = Path(out_dir or tempfile.mkdtemp(prefix=f"quality-{lang}-"))
    model_dir.mkdir(parents=True, exist_ok=True)
    train_file = model_dir / "train.txt"
    lines = [f"{LABEL_HIGH} {t}" for t in fasttext_lines(pos_train, cfg.max_chars)]
    lines += [f"{LABEL_LOW} {t}" for t in fasttext_lines(neg_train, cfg.max_chars)]
    random.Random(cfg.seed).shuffle(lines)
    train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = fasttext.train_supervised(
        input=str(train_file), epoch=cfg.epoch, lr=cfg.lr, dim=cfg.dim, wordNgrams=cfg.word_ngrams,
        bucket=cfg.bucket, minCount=1, loss="softmax", thread=1, seed=cfg.seed, verbose=0)
    train_file.unlink()
    model.save_model(str(model_dir / MODEL_FILE))
    metrics = evaluate(model, pos_test, neg_test, cfg.max_chars)
    metrics.update({"train_positives": len(pos_train), "train_negatives": len(neg_train),
                    "test_positives": len(pos_test), "test_negatives": len(neg_test)})
    (model_dir / META_FILE).write_text(json.dumps({
        "lang": lang, "labels": [LABEL_HIGH, LABEL_LOW], "max_chars": cfg.max_chars, "metrics": metrics,
        "negatives": f"{table}@v{version}", "positives": str(positives_path)}, indent=2))
    return TrainResult(lang, len(positives), len(negatives), metrics, model_dir, table, version)
