"""Tokenise a pinned table version on the executors and write one Megatron shard per language.

Documents go to the shard in (lang, doc_id) order — doc_id is a hash, so this is a fixed
pseudo-random order, the same on every run. Each Spark task tokenises a contiguous range of that
order and writes its own part files; the driver then concatenates the parts (file copies, no
tokens in driver memory), writes the `.idx`, swaps the finished shards into place and records
them in `shard_manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine import lake
from data_engine.config import ExportConfig
from data_engine.errors import ConfigError
from data_engine.export.indexed_dataset import merge_parts, token_dtype
from data_engine.langs import UNKNOWN
from data_engine.tables import DOCS_CURATED, DOCS_DEDUP, SHARD_MANIFEST
from data_engine.tokenizer import identity

PART_SCHEMA = ("lang string, part int, bin_path string, lengths_path string, docs long, "
               "tokens long, dropped long")
MANIFEST_SCHEMA = ("stage string, lang string, prefix string, docs long, tokens long, "
                   "checksum string, source_table string, source_version long, tokenizer string, "
                   "tokenizer_digest string, vocab_size long, eod_id long, dtype string")
#: What a model is trained on; lineage columns (source table and version) stay out of the digest.
DIGEST_COLUMNS = ("stage", "lang", "docs", "tokens", "checksum", "tokenizer_digest", "eod_id", "dtype")
SHARD_SUFFIX = "_text_document"


@dataclass
class ExportResult:
    stage: str
    source_table: str
    source_version: int
    out_dir: str
    docs: int = 0
    tokens: int = 0
    dropped: int = 0
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    manifest_digest: str = ""


def _tokenize_partitions(parts_dir: str, tokenizer: str, eod_id: int, dtype: str,
                         batch_docs: int, min_tokens: int, skip_langs: frozenset[str]) -> Any:
    def tokenize(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pandas as pd
        from pyspark import TaskContext

        from data_engine.tokenizer import load_fast

        ctx = TaskContext.get()
        tag = f"{ctx.partitionId():05d}-{ctx.attemptNumber()}-{uuid.uuid4().hex[:8]}"
        tok = load_fast(tokenizer)
        np_dtype = np.dtype(dtype)
        state: dict[str, dict[str, Any]] = {}
        skipped: dict[str, int] = {}
        for pdf in batches:
            for lang, group in pdf.groupby("lang", sort=False):
                if lang in skip_langs:
                    skipped[lang] = skipped.get(lang, 0) + len(group)
                    continue
                st = state.get(lang)
                if st is None:
                    base = Path(parts_dir) / f"{lang}-{tag}"
                    st = state[lang] = {"bin": open(f"{base}.bin", "wb"), "base": str(base),  # noqa: SIM115
                                        "lengths": [], "dropped": 0}
                texts = group["text"].tolist()
                for start in range(0, len(texts), batch_docs):
                    encodings = tok.encode_batch(texts[start:start + batch_docs], add_special_tokens=False)
                    for enc in encodings:
                        if len(enc.ids) < min_tokens:
                            st["dropped"] += 1
                            continue
                        ids = np.fromiter(enc.ids, dtype=np_dtype, count=len(enc.ids))
                        st["bin"].write(ids.tobytes())
                        st["bin"].write(np.array([eod_id], dtype=np_dtype).tobytes())
                        st["lengths"].append(len(ids) + 1)
        rows = []
        for lang, st in state.items():
            st["bin"].close()
            lengths = np.asarray(st["lengths"], dtype=np.int32)
            np.save(f"{st['base']}.lengths.npy", lengths)
            rows.append({"lang": lang, "part": ctx.partitionId(), "bin_path": f"{st['base']}.bin",
                         "lengths_path": f"{st['base']}.lengths.npy", "docs": len(lengths),
                         "tokens": int(lengths.astype(np.int64).sum()), "dropped": st["dropped"]})
        for lang, n in skipped.items():
            rows.append({"lang": lang, "part": ctx.partitionId(), "bin_path": "", "lengths_path": "",
                         "docs": 0, "tokens": 0, "dropped": n})
        if rows:  # an empty object-typed frame does not convert to the declared Arrow schema
            yield pd.DataFrame(rows, columns=["lang", "part", "bin_path", "lengths_path", "docs",
                                              "tokens", "dropped"])

    return tokenize


def export_shards(spark: Any, lake_dir: str, out_dir: str, stage: str,
                  cfg: ExportConfig = ExportConfig(), *, input_version: int | None = None,
                  run: Any = None) -> ExportResult:
    from pyspark.sql import functions as F

    if not stage or "/" in stage or stage.startswith("."):
        raise ConfigError(f"--stage must be a plain name such as 'stage1', got {stage!r}")
    tok = identity(cfg.tokenizer, cfg.eod_id)
    table = cfg.input_table or lake.first_existing(lake_dir, (DOCS_CURATED, DOCS_DEDUP), purpose="export")
    source = lake.read_table(spark, lake_dir, table, version=input_version)
    if run is not None:
        run.table_read(source.name, source.path, source.version)
    dtype = token_dtype(max(tok.vocab_size, tok.eod_id + 1))
    stage_dir = Path(out_dir).expanduser().resolve() / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    work = stage_dir / f"_tmp-{uuid.uuid4().hex}"
    (work / "parts").mkdir(parents=True)
    result = ExportResult(stage, table, source.version, str(stage_dir))
    try:
        df = source.df.select("doc_id", "lang", "text")
        if cfg.langs:
            df = df.filter(F.col("lang").isin(list(cfg.langs)))
        # Unknown-language text is not training data: counted as dropped unless asked for.
        skip = frozenset() if UNKNOWN in cfg.langs else frozenset({UNKNOWN})
        partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
        parts = (df.repartitionByRange(partitions, "lang", "doc_id")
                 .sortWithinPartitions("lang", "doc_id")
                 .mapInPandas(_tokenize_partitions(str(work / "parts"), cfg.tokenizer, tok.eod_id,
                                                   dtype.str, cfg.batch_docs, cfg.min_tokens, skip),
                              PART_SCHEMA)
                 .collect())  # one small row per (task, language): file paths and counts
        by_lang: dict[str, list[Any]] = {}
        for p in sorted(parts, key=lambda r: (r.lang, r.part)):
            by_lang.setdefault(p.lang, []).append(p)
            result.dropped += p.dropped
        for lang, lang_parts in sorted(by_lang.items()):
            if lang in skip:
                continue
            prefix = work / f"{lang}{SHARD_SUFFIX}"
            docs, tokens, checksum = merge_parts(prefix, [(p.bin_path, p.lengths_path)
                                                          for p in lang_parts if p.docs > 0], dtype)
            if docs == 0:
                continue
            result.shards[lang] = {"prefix": str(stage_dir / f"{lang}{SHARD_SUFFIX}"), "docs": docs,
                                   "tokens": tokens, "checksum": checksum}
            result.docs += docs
            result.tokens += tokens
        _swap_into_place(work, stage_dir, set(result.shards))
        manifest = [{"stage": stage, "lang": lang, "prefix": s["prefix"], "docs": s["docs"],
                     "tokens": s["tokens"], "checksum": s["checksum"], "source_table": table,
                     "source_version": source.version,
                     "tokenizer": tok.name, "tokenizer_digest": tok.digest,
                     "vocab_size": tok.vocab_size, "eod_id": tok.eod_id, "dtype": dtype.name}
                    for lang, s in sorted(result.shards.items())]
        result.manifest_digest = manifest_digest(manifest)
        (stage_dir / "manifest.json").write_text(json.dumps(
            {"digest": result.manifest_digest, "shards": manifest}, indent=2), encoding="utf-8")
        rows = [tuple(m[c.split()[0]] for c in MANIFEST_SCHEMA.split(", ")) for m in manifest]
        written = lake.write_table(spark.createDataFrame(rows, MANIFEST_SCHEMA), lake_dir,
                                   SHARD_MANIFEST, mode="overwrite", partition_by=("stage",),
                                   replace_partitions={"stage": stage},
                                   metadata={"job": "export_shards", "stage": stage,
                                             "manifest_digest": result.manifest_digest,
                                             "mlflow_run_id": getattr(run, "run_id", "")})
        result.tables[SHARD_MANIFEST] = written.version
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def manifest_digest(rows: list[dict[str, Any]]) -> str:
    """SHA-256 over the shards' content columns in canonical JSON: names exactly the tokens a
    model trained on, and stays the same when the same documents are exported again."""
    content = [{c: r.get(c) for c in DIGEST_COLUMNS} for r in rows]
    canonical = json.dumps(sorted(content, key=lambda r: (r["stage"], r["lang"])), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _swap_into_place(work: Path, stage_dir: Path, langs: set[str]) -> None:
    """Move finished shards over the old ones; remove old shards of languages no longer exported.

    Each file moves with an atomic rename: a reader sees an old or a new file, never a partial one.
    """
    for old in stage_dir.glob(f"*{SHARD_SUFFIX}.*"):
        if old.name.split(SHARD_SUFFIX)[0] not in langs and old.suffix in (".bin", ".idx"):
            old.unlink()
    for lang in sorted(langs):
        for suffix in (".bin", ".idx"):
            os.replace(work / f"{lang}{SHARD_SUFFIX}{suffix}", stage_dir / f"{lang}{SHARD_SUFFIX}{suffix}")
