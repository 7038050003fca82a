from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from data_engine.errors import ConfigError, TableNotFoundError
from data_engine.export.shards import manifest_digest
from trainer.data import blend_from_manifest

ShardFactory = Callable[..., dict[str, Any]]
ManifestWriter = Callable[..., None]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


def test_default_weights_follow_token_counts(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    ind = make_shard("stage1", "ind", docs=30, seed=1)
    vie = make_shard("stage1", "vie", docs=10, seed=2)
    write_manifest(lake, [ind, vie, make_shard("stage2", "tha", docs=5, seed=3)])

    blend = blend_from_manifest(lake, "stage1")

    total = ind["tokens"] + vie["tokens"]
    assert blend.paths == [ind["tokens"] / total, ind["prefix"], vie["tokens"] / total, vie["prefix"]]
    assert blend.lang_weights == {"ind": ind["tokens"] / total, "vie": vie["tokens"] / total}
    assert blend.manifest_version == 0
    assert blend.manifest_path == (lake / "shard_manifest").resolve()


def test_weights_are_normalised_and_unnamed_languages_left_out(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    rows = [make_shard("stage2", lang, seed=i) for i, lang in enumerate(["ind", "tha", "vie"])]
    write_manifest(lake, rows)

    blend = blend_from_manifest(lake, "stage2", {"tha": 3, "ind": 1})

    assert blend.lang_weights == {"ind": 0.25, "tha": 0.75}
    assert blend.paths == [0.25, rows[0]["prefix"], 0.75, rows[1]["prefix"]]


def test_a_language_weight_is_shared_by_its_shards_in_proportion_to_tokens(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter, tmp_path: Path) -> None:
    first = make_shard("stage1", "ind", docs=20, seed=1)
    second = make_shard("stage1", "ind", docs=10, seed=2, name="ind_part2")
    empty = dict(first, prefix=str(tmp_path / "never_opened"), tokens=0, docs=0)
    vie = make_shard("stage1", "vie", seed=3)
    write_manifest(lake, [first, second, empty, vie])

    blend = blend_from_manifest(lake, "stage1", {"ind": 0.6, "vie": 0.4})

    ind_tokens = first["tokens"] + second["tokens"]
    weights = dict(zip(blend.paths[1::2], blend.paths[0::2], strict=True))
    assert weights == pytest.approx({first["prefix"]: 0.6 * first["tokens"] / ind_tokens,
                                     second["prefix"]: 0.6 * second["tokens"] / ind_tokens,
                                     vie["prefix"]: 0.4})
    assert sum(blend.paths[0::2]) == pytest.approx(1.0)


def test_digest_names_the_rows_used(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    ind, vie = make_shard("stage1", "ind", seed=1), make_shard("stage1", "vie", seed=2)
    write_manifest(lake, [ind, vie, make_shard("stage2", "tha", seed=3)])
    before = blend_from_manifest(lake, "stage1")
    assert len(before.digest) == 64

    # Rewriting the same stage-1 rows (other stages changed) keeps the digest; weights do not enter it.
    write_manifest(lake, [vie, ind])
    again = blend_from_manifest(lake, "stage1", {"ind": 1, "vie": 9})
    assert (again.digest, again.manifest_version) == (before.digest, 1)

    # Lineage is not content: the same shards re-exported from a newer table version keep it.
    write_manifest(lake, [ind, dict(vie, source_version=4)])
    assert blend_from_manifest(lake, "stage1").digest == before.digest
    # Other tokens (a re-export of other documents, under its own file name) are another digest.
    write_manifest(lake, [ind, make_shard("stage1", "vie", seed=5, name="vie-other")])
    assert blend_from_manifest(lake, "stage1").digest != before.digest

    # With every language of the stage in the blend, it is the exporter's digest of that stage.
    assert before.digest == manifest_digest([ind, vie])


def test_no_manifest_table(lake: Path) -> None:
    with pytest.raises(TableNotFoundError, match="no shard_manifest table in lake"):
        blend_from_manifest(lake, "stage1")


def test_no_rows_for_the_stage(lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    write_manifest(lake, [make_shard("stage1", "ind")])
    with pytest.raises(ConfigError, match=r"no shards for stage 'stage3' \(stages present: \['stage1'\]\)"):
        blend_from_manifest(lake, "stage3")


def test_weighted_language_without_shard_and_bad_weights(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    write_manifest(lake, [make_shard("stage1", "ind", seed=1), make_shard("stage1", "vie", seed=2)])
    with pytest.raises(ConfigError) as err:
        blend_from_manifest(lake, "stage1", {"ind": 1.0, "khm": 0.5, "vie": -1.0})
    message = str(err.value)
    assert "weight of 'vie' must be positive, got -1.0" in message
    assert ("'khm' has a weight but no shard with tokens in stage 'stage1' "
            "(languages with shards: ['ind', 'vie'])") in message


def test_shards_from_another_tokenizer_are_refused(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    other = make_shard("stage1", "vie", seed=2, tokenizer="llama3", tokenizer_digest="ab" * 32)
    write_manifest(lake, [make_shard("stage1", "ind", seed=1), other])
    with pytest.raises(ConfigError, match=r"vie shard .* was tokenised with 'llama3' \(tokenizer.json sha256 "
                                          r"abababababab…\), the trainer uses 'qwen2.5'"):
        blend_from_manifest(lake, "stage1")
    # The language is not used, so its shards do not matter.
    assert blend_from_manifest(lake, "stage1", {"ind": 1}).lang_weights == {"ind": 1.0}


def test_a_different_end_of_document_id_is_refused(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    write_manifest(lake, [make_shard("stage1", "ind", eod_id=151645)])
    with pytest.raises(ConfigError, match="ends documents with id 151645, the tokenizer's EOD is 151643"):
        blend_from_manifest(lake, "stage1")


def test_missing_bin_or_idx_files(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    ind, vie = make_shard("stage1", "ind", seed=1), make_shard("stage1", "vie", seed=2)
    write_manifest(lake, [ind, vie])
    os.remove(ind["prefix"] + ".idx")
    os.remove(vie["prefix"] + ".bin")
    os.remove(vie["prefix"] + ".idx")
    with pytest.raises(ConfigError) as err:
        blend_from_manifest(lake, "stage1")
    message = str(err.value)
    assert f"ind shard {ind['prefix']}: missing {ind['prefix']}.idx" in message
    assert f"vie shard {vie['prefix']}: missing {vie['prefix']}.bin and {vie['prefix']}.idx" in message


def test_split_documents_follows_megatron_rounding() -> None:
    from trainer.data import split_documents

    assert split_documents(40, "98,2,0") == [39, 1, 0]
    assert split_documents(6, "98,2,0") == [6, 0, 0]
    assert split_documents(10, "8,1,1") == [8, 1, 1]


def test_a_split_part_left_empty_is_an_error_not_a_hang(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    write_manifest(lake, [make_shard("stage1", "lao", docs=6, seed=1), make_shard("stage1", "tha", seed=2)])
    with pytest.raises(ConfigError, match=r"lao shard .* has 6 documents: split '98,2,0' leaves its "
                                          r"validation part empty"):
        blend_from_manifest(lake, "stage1", split="98,2,0")
    assert blend_from_manifest(lake, "stage1", split="60,40,0").lang_weights.keys() == {"lao", "tha"}


def test_a_shard_changed_after_export_is_refused(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    ind, vie = make_shard("stage1", "ind", seed=1), make_shard("stage1", "vie", seed=2)
    write_manifest(lake, [ind, vie])
    data = bytearray(Path(vie["prefix"] + ".bin").read_bytes())
    data[100] ^= 0xFF  # same size, same counts: only the checksum can tell
    Path(vie["prefix"] + ".bin").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"vie shard {vie['prefix']}: {vie['prefix']}.bin does not match the "
                                          rf"manifest's checksum \({vie['checksum'][:12]}…\): the file changed "
                                          "after export; re-export the shards"):
        blend_from_manifest(lake, "stage1")
    assert blend_from_manifest(lake, "stage1", {"ind": 1}).lang_weights == {"ind": 1.0}


def test_document_and_token_counts_come_from_the_index(
        lake: Path, make_shard: ShardFactory, write_manifest: ManifestWriter) -> None:
    ind = make_shard("stage1", "ind", docs=20, seed=1)
    write_manifest(lake, [dict(ind, docs=19)])
    with pytest.raises(ConfigError, match=rf"ind shard .*: {ind['prefix']}.idx holds 20 documents, the manifest "
                                          "says 19"):
        blend_from_manifest(lake, "stage1")
    write_manifest(lake, [dict(ind, tokens=ind["tokens"] + 1)])
    with pytest.raises(ConfigError, match=rf"\.idx holds {ind['tokens']} tokens, the manifest says "
                                          rf"{ind['tokens'] + 1}"):
        blend_from_manifest(lake, "stage1")
    write_manifest(lake, [dict(ind, checksum=None)])
    with pytest.raises(ConfigError, match="the manifest records no checksum of"):
        blend_from_manifest(lake, "stage1")
    Path(ind["prefix"] + ".idx").write_bytes(b"not an index")
    write_manifest(lake, [ind])
    with pytest.raises(ConfigError, match=r"is not a Megatron index \(bad header\)"):
        blend_from_manifest(lake, "stage1")


def test_an_index_changed_after_export_is_refused_by_its_checksum(
        lake: Path, make_shard: ShardFactory, tmp_path: Path) -> None:
    """Rows with the exporter's `idx_checksum` column: an .idx with the same counts but other bytes."""
    import numpy as np
    import pyarrow as pa
    from deltalake import write_deltalake

    from data_engine.export.indexed_dataset import file_checksum
    from data_engine.export.manifest import COLUMNS

    ind = make_shard("stage1", "ind", docs=20, seed=1)
    row = dict(ind, idx_checksum=file_checksum(ind["prefix"] + ".idx"), tokenizer_revision=None)
    types = {"string": pa.string(), "long": pa.int64()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
    write_deltalake(str(lake / "shard_manifest"), pa.Table.from_pylist([row], schema=schema), partition_by=["stage"])
    assert blend_from_manifest(lake, "stage1").lang_weights == {"ind": 1.0}
    idx = bytearray(Path(ind["prefix"] + ".idx").read_bytes())
    pointers = 34 + 20 * 4  # after the header and the lengths: the int64 byte offsets
    idx[pointers + 8:pointers + 16] = np.int64(12345).tobytes()
    Path(ind["prefix"] + ".idx").write_bytes(bytes(idx))
    with pytest.raises(ConfigError, match=rf"{ind['prefix']}.idx does not match the manifest's checksum"):
        blend_from_manifest(lake, "stage1")


def test_a_languages_parts_are_blended_in_part_order_and_their_sizes_checked(
        lake: Path, make_shard: ShardFactory, tmp_path: Path) -> None:
    """Rows as the exporter writes them since parts: `<lang>-<digest>_text_document_<k>`, with `part` and
    `bytes`; part 10 comes after part 2, and a `.bin` of another size than the row's is refused."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from data_engine.export.indexed_dataset import file_checksum
    from data_engine.export.manifest import COLUMNS

    rows = []
    for seed, k in enumerate([10, 0, 2, 1]):
        shard = make_shard("stage1", "ind", docs=5 + seed, seed=seed, name=f"ind-{k}")
        prefix = str(tmp_path / "shards" / "stage1" / f"ind-0123456789abcdef_text_document_{k}")
        for ext in (".bin", ".idx"):
            os.rename(shard["prefix"] + ext, prefix + ext)
        rows.append(dict(shard, prefix=prefix, part=k, bytes=os.path.getsize(prefix + ".bin"),
                         idx_checksum=file_checksum(prefix + ".idx"), part_bytes=1 << 30))
    vie = make_shard("stage1", "vie", seed=9)
    types = {"string": pa.string(), "long": pa.int64()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
    write_deltalake(str(lake / "shard_manifest"), pa.Table.from_pylist([*rows, vie], schema=schema),
                    partition_by=["stage"])

    blend = blend_from_manifest(lake, "stage1", {"ind": 0.5, "vie": 0.5})
    by_part = sorted(rows, key=lambda r: r["part"])
    assert blend.paths[1::2] == [r["prefix"] for r in by_part] + [vie["prefix"]]
    ind_tokens = sum(r["tokens"] for r in rows)
    assert blend.paths[0::2][:4] == pytest.approx([0.5 * r["tokens"] / ind_tokens for r in by_part])
    assert blend.digest == manifest_digest([*rows, vie]) == manifest_digest([vie, *reversed(rows)])

    bad = dict(by_part[1], bytes=by_part[1]["bytes"] + 4)
    write_deltalake(str(lake / "shard_manifest"), pa.Table.from_pylist([bad, vie], schema=schema),
                    partition_by=["stage"], mode="overwrite")
    with pytest.raises(ConfigError, match=rf"{bad['prefix']}.bin has {bad['bytes'] - 4} bytes, the manifest says "
                                          rf"{bad['bytes']}"):
        blend_from_manifest(lake, "stage1")
