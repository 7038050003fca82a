"""`shard_manifest`: the shard files each training stage reads, replaced safely.

One row per shard part (several per stage and language: `part` k = 0, 1, …, each with its
documents, tokens, `.bin` bytes and checksums). The table is small (stages × languages rows) and
stays partitioned by `stage`. An export rewrites it whole in one commit based on the version it
read at its start: the rows of the languages it exported (of its stage) are replaced, every other
row is carried over unchanged. So re-exporting `tha` leaves `vie`'s rows and files alone, and a
concurrent export fails with TableConflictError instead of silently losing rows; a table written by
an older sailyard gains the new columns (null in rows it did not write).

Shard files are named by their content (`<lang>-<16 hex>_text_document_<k>.{bin,idx}`, the 16 hex
digits a hash of every part's checksums), so new files never overwrite the files the committed
manifest points at: a job killed before its commit leaves
the old manifest and the old shards valid, and the old files are removed only after the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from data_engine import lake
from data_engine.tables import SHARD_MANIFEST

SHARD_SUFFIX = "_text_document"
COLUMNS: tuple[tuple[str, str], ...] = (
    ("stage", "string"), ("lang", "string"), ("prefix", "string"), ("docs", "long"), ("tokens", "long"),
    ("checksum", "string"),  # xxh3-128 of the .bin
    ("source_table", "string"), ("source_version", "long"), ("tokenizer", "string"),
    ("tokenizer_digest", "string"), ("vocab_size", "long"), ("eod_id", "long"), ("dtype", "string"),
    ("idx_checksum", "string"),  # xxh3-128 of the .idx
    ("tokenizer_revision", "string"),  # HF commit of the tokenizer snapshot (see data_engine.tokenizer)
    ("plan_digest", "string"),  # the mixture plan an `export_shards --plan` wrote the row for; null otherwise
    ("part", "long"),  # k of `<lang>-<digest>_text_document_<k>`; null in rows of one-file shards (older exports)
    ("bytes", "long"),  # size of the part's .bin
    ("part_bytes", "long"),  # the export's `part_bytes` (null: one part per language): rebuilding needs it
)
MANIFEST_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
#: What a model is trained on; lineage columns (source table and version, plan) stay out of the digest.
DIGEST_COLUMNS = ("stage", "lang", "docs", "tokens", "checksum", "idx_checksum", "tokenizer_digest",
                  "eod_id", "dtype")


def manifest_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 over the shards' content columns in canonical JSON: names exactly the tokens a
    model trained on, and stays the same when the same documents are exported again.

    Rows are put in content order (a language's parts by their checksums), so the digest does not
    depend on the order rows are listed in, and one-part languages hash as they always have."""
    content = [{c: r.get(c) for c in DIGEST_COLUMNS} for r in rows]
    canonical = json.dumps(sorted(content, key=lambda r: (r["stage"], r["lang"], r["checksum"] or "",
                                                          r["idx_checksum"] or "")), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def shard_stem(lang: str, parts: Sequence[tuple[str, str]]) -> str:
    """`<lang>-<16 hex>_text_document`, the 16 hex digits a hash of the parts' (`.bin`, `.idx`)
    checksums in part order: the same documents give the same names, others new ones (a
    one-part language gets the tag a one-file shard had)."""
    tag = hashlib.sha256("\n".join(f"{c}:{i}" for c, i in parts).encode()).hexdigest()[:16]
    return f"{lang}-{tag}{SHARD_SUFFIX}"


def part_prefix(stem: str, k: int) -> str:
    return f"{stem}_{k}"


def row_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Rows by stage, language and part number (not `_10` before `_2`)."""
    part = row.get("part")
    return row["stage"], row["lang"], -1 if part is None else part, row["prefix"]


def shard_files(prefix: str) -> list[Path]:
    return [Path(prefix + ".bin"), Path(prefix + ".idx")]


def read_manifest(lake_dir: str) -> tuple[int | None, list[dict[str, Any]]]:
    """(version, rows) of the manifest now; rows carry every column of `COLUMNS` (None if absent)."""
    version = lake.table_version(lake_dir, SHARD_MANIFEST)
    if version is None:
        return None, []
    rows = lake.read_arrow(lake_dir, SHARD_MANIFEST, version=version).to_pylist()
    return version, [{name: r.get(name) for name, _ in COLUMNS} for r in rows]


def replace_rows(old: list[dict[str, Any]], stage: str, langs: set[str] | None,
                 new: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of the new manifest, old rows replaced): `stage`'s rows of `langs` (None: all of the
    stage's) give way to `new`; every other row stays."""
    def replaced(r: Mapping[str, Any]) -> bool:
        return r["stage"] == stage and (langs is None or r["lang"] in langs)

    gone = [r for r in old if replaced(r)]
    rows = [r for r in old if not replaced(r)] + new
    return sorted(rows, key=row_order), gone


def commit_manifest(spark: Any, lake_dir: str, rows: list[dict[str, Any]], *, base: int | None,
                    metadata: Mapping[str, Any]) -> int:
    """Commit `rows` as the whole manifest, on top of version `base` (None: the table is new)."""
    data = [tuple(r.get(name) for name, _ in COLUMNS) for r in rows]
    written = lake.write_table(spark.createDataFrame(data, MANIFEST_SCHEMA), lake_dir, SHARD_MANIFEST,
                               mode="overwrite", partition_by=("stage",), base_version=base,
                               metadata=metadata)
    return written.version


def write_stage_json(stage_dir: Path, stage: str, rows: list[dict[str, Any]]) -> str:
    """`<stage_dir>/manifest.json`: the stage's rows and their digest, replaced atomically."""
    shards = sorted((r for r in rows if r["stage"] == stage), key=row_order)
    digest = manifest_digest(shards)
    staging = stage_dir / f".manifest.json.{os.getpid()}.tmp"
    staging.write_text(json.dumps({"stage": stage, "digest": digest, "shards": shards}, indent=2),
                       encoding="utf-8")
    os.replace(staging, stage_dir / "manifest.json")
    return digest


def remove_unreferenced(candidates: Iterable[Mapping[str, Any]], keep: Iterable[Mapping[str, Any]],
                        within: Path) -> list[str]:
    """Delete the shard files of `candidates` that no row of `keep` names; only under `within`
    (a shard elsewhere may be someone's copy). Returns the prefixes removed."""
    kept = {r["prefix"] for r in keep}
    removed = []
    for row in candidates:
        prefix = row["prefix"]
        if prefix in kept or Path(prefix).parent.resolve() != within.resolve():
            continue
        for path in shard_files(prefix):
            path.unlink(missing_ok=True)
        removed.append(prefix)
    return removed
