"""Export selects what it is asked for and replaces only that: normalised --langs, errors that change
nothing, per-language replacement of shards (every part) and manifest rows, files the old manifest
needs kept. Parts are small here (`PARTS`), so Thai and Vietnamese have several each."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from data_engine import lake
from data_engine.errors import ConfigError, InputError
from data_engine.export.config import ExportConfig
from data_engine.export.indexed_dataset import token_dtype
from data_engine.export.manifest import manifest_digest
from data_engine.export.shards import ExportResult, _place, _tokenize_into_parts, export_shards
from data_engine.tokenizer import identity
from trainer.data import blend_from_manifest

SCHEMA = "doc_id string, lang string, text string"
ROWS = ([(f"tha-{i:02d}", "tha", f"ภาษาไทยเอกสารที่ {i} " * (1 + i % 4)) for i in range(12)]
        + [(f"vie-{i:02d}", "vie", f"Văn bản số {i} " * (1 + i % 5)) for i in range(15)]
        + [(f"zho-{i:02d}", "zho", f"中文文档第{i}号。" * (1 + i % 3)) for i in range(8)]
        + [("und-00", "und", "??? unknown")])
PARTS = ExportConfig(part_bytes=256)  # 64 tokens a part


@pytest.fixture()
def exported(spark, lake_dir, tmp_path):
    lake.write_table(spark.createDataFrame(ROWS, SCHEMA), lake_dir, "docs_dedup", mode="error")
    out = tmp_path / "shards"
    first = export_shards(spark, lake_dir, str(out), "stage1", PARTS)
    assert len(first.shards["tha"]["parts"]) > 1 and len(first.shards["vie"]["parts"]) > 1
    return lake_dir, out, first


def _files(stage_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stage_dir.glob("*_text_document_*"))}


def _manifest(lake_dir: str) -> dict[tuple[str, str], list[dict]]:
    """(stage, lang) → its rows, one per part, in part order."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(lake.read_arrow(lake_dir, "shard_manifest").to_pylist(), key=lambda r: r["part"]):
        out.setdefault((r["stage"], r["lang"]), []).append(r)
    return out


def _add_thai_document(spark, lake_dir: str) -> int:
    rows = ROWS + [("tha-99", "tha", "เอกสารใหม่ภาษาไทย")]
    return lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_dedup", mode="overwrite").version


def test_shard_files_are_named_by_content(exported):
    lake_dir, out, first = exported
    names = []
    for lang, shard in first.shards.items():
        sums = "\n".join(f"{p['checksum']}:{p['idx_checksum']}" for p in shard["parts"])
        tag = hashlib.sha256(sums.encode()).hexdigest()[:16]
        assert [Path(p["prefix"]).name for p in shard["parts"]] == \
            [f"{lang}-{tag}_text_document_{k}" for k in range(len(shard["parts"]))]
        names += [Path(p["prefix"]).name for p in shard["parts"]]
    assert set(_files(out / "stage1")) == {f"{n}{ext}" for n in names for ext in (".bin", ".idx")}


def test_langs_are_normalised_and_a_selection_without_documents_changes_nothing(spark, exported):
    lake_dir, out, first = exported
    files, manifest = _files(out / "stage1"), _manifest(lake_dir)
    version = lake.table_version(lake_dir, "shard_manifest")

    def unchanged() -> None:
        assert _files(out / "stage1") == files
        assert lake.table_version(lake_dir, "shard_manifest") == version and _manifest(lake_dir) == manifest

    with pytest.raises(ConfigError, match=r"export.langs: 'khm' has no documents in docs_dedup v0 \(languages "
                                          r"present: \['tha', 'und', 'vie', 'zho'\]\); no shard was changed"):
        export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("khm",), part_bytes=256))
    unchanged()
    with pytest.raises(ConfigError, match=r"'km' \(= khm\), 'Thai' \(not a language tag\) have no documents"):
        export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("tha", "km", "Thai")))
    unchanged()
    empty = spark.createDataFrame([], SCHEMA)
    lake.write_table(empty, lake_dir, "docs_empty", mode="error")
    with pytest.raises(InputError, match=r"docs_empty v0 has no documents of a known language to export"):
        export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(input_table="docs_empty"))
    unchanged()
    with pytest.raises(InputError, match=r"none of the 12 documents of tha has 10000 or more tokens; nothing was "
                                         r"exported and no shard was changed"):
        export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("th",), min_tokens=10000))
    unchanged()
    assert not list((out / "stage1").glob("_tmp-*"))

    # `th` and `th_TH` are Thai, as at ingest; exporting what is already there changes no file.
    again = export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("th", "th_TH"), part_bytes=256))
    assert set(again.shards) == {"tha"} and again.langs_replaced == ["tha"] and again.removed == []
    assert _files(out / "stage1") == files and _manifest(lake_dir) == manifest
    assert again.manifest_digest == first.manifest_digest


def test_reexporting_one_language_replaces_only_its_shard_and_row(spark, exported):
    lake_dir, out, first = exported
    other = export_shards(spark, lake_dir, str(out), "stage2", ExportConfig(langs=("vie",), part_bytes=256))
    before_files, before = _files(out / "stage1"), _manifest(lake_dir)
    new_version = _add_thai_document(spark, lake_dir)

    result = export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("tha",), part_bytes=256))

    after = _manifest(lake_dir)
    assert set(after) == set(before)
    assert sum(r["docs"] for r in after[("stage1", "tha")]) == sum(r["docs"] for r in before[("stage1", "tha")]) + 1
    assert {r["source_version"] for r in after[("stage1", "tha")]} == {new_version}
    assert not {r["prefix"] for r in after[("stage1", "tha")]} & {r["prefix"] for r in before[("stage1", "tha")]}
    for key in before:
        if key != ("stage1", "tha"):
            assert after[key] == before[key], key  # rows of other languages and stages: as they were
    files = _files(out / "stage1")
    assert {n: d for n, d in files.items() if not n.startswith("tha-")} == \
        {n: d for n, d in before_files.items() if not n.startswith("tha-")}
    old_tha = {Path(r["prefix"]).name for r in before[("stage1", "tha")]}
    assert not any(n.rsplit(".", 1)[0] in old_tha for n in files)  # every replaced part's files are gone
    assert result.removed == [r["prefix"] for r in before[("stage1", "tha")]]
    # manifest.json and the exporter's digest describe the whole stage; the trainer agrees and its
    # checks (counts, checksums) pass on the mixed old/new files.
    stage_rows = [r for k, rows in after.items() if k[0] == "stage1" for r in rows]
    on_disk = json.loads((out / "stage1" / "manifest.json").read_text())
    assert on_disk["digest"] == result.manifest_digest == manifest_digest(stage_rows)
    assert {s["lang"] for s in on_disk["shards"]} == {"tha", "vie", "zho"}
    assert [s["prefix"] for s in on_disk["shards"] if s["lang"] == "tha"] == \
        [p["prefix"] for p in result.shards["tha"]["parts"]]
    assert blend_from_manifest(lake_dir, "stage1").digest == result.manifest_digest
    assert blend_from_manifest(lake_dir, "stage2").digest == other.manifest_digest


def test_a_job_killed_before_the_manifest_commit_leaves_the_old_shards_valid(spark, exported):
    """The export's own steps up to the commit (tokenise, write the parts, move them in), then the process "dies"."""
    lake_dir, out, first = exported
    version, files = lake.table_version(lake_dir, "shard_manifest"), _files(out / "stage1")
    _add_thai_document(spark, lake_dir)
    tok = identity("qwen2.5")
    dtype = token_dtype(max(tok.vocab_size, tok.eod_id + 1))
    work = out / "stage1" / f"_tmp-{uuid.uuid4().hex}"
    work.mkdir(parents=True)
    source = lake.read_table(spark, lake_dir, "docs_dedup")
    written = _tokenize_into_parts(spark, source.df, ["tha"], work, tok, dtype, PARTS,
                                   ExportResult("stage1", "docs_dedup", source.version, str(out / "stage1")))
    placed = _place("tha", written["tha"], out / "stage1", "stage1", "docs_dedup", source.version, tok, dtype.name,
                    part_bytes=PARTS.part_bytes)

    # Nothing the committed manifest names has changed; the trainer's checks pass on it.
    assert lake.table_version(lake_dir, "shard_manifest") == version
    assert {n: d for n, d in _files(out / "stage1").items() if n in files} == files
    old_prefixes = [p["prefix"] for p in first.shards["tha"]["parts"]]
    assert all(Path(p["prefix"] + ".bin").is_file() and p["prefix"] not in old_prefixes for p in placed)
    blend = blend_from_manifest(lake_dir, "stage1")
    assert set(old_prefixes) <= set(blend.paths) and blend.digest == first.manifest_digest

    # The next export of the same documents adopts the same (content-named) files.
    again = export_shards(spark, lake_dir, str(out), "stage1", ExportConfig(langs=("tha",), part_bytes=256))
    assert [p["prefix"] for p in again.shards["tha"]["parts"]] == [p["prefix"] for p in placed]
    assert not any(Path(p + ".bin").exists() for p in old_prefixes)
