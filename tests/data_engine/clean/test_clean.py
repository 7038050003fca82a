"""Language identification and the cleaning stage end to end on real Spark and Delta."""

from __future__ import annotations

from collections import Counter

from data_engine import lake
from data_engine.clean.config import CleanConfig, LidConfig
from data_engine.clean.lid import decide, predict
from data_engine.clean.run import clean
from data_engine.langs import LANGS
from data_engine.sample.corpus import load_udhr


def test_lid_accuracy_on_real_paragraphs_of_all_15_languages():
    texts, gold = [], []
    for lang in LANGS:
        for section in load_udhr(lang):
            for para in section:
                texts.append(para)
                gold.append(lang)
    pred = [p for p, _ in predict(texts)]
    right, total = Counter(), Counter(gold)
    for g, p in zip(gold, pred, strict=True):
        right[g] += g == p
    accuracy = {lang: right[lang] / total[lang] for lang in LANGS}
    assert sum(right.values()) / len(gold) >= 0.9, accuracy
    assert all(a >= 0.7 for a in accuracy.values()), accuracy
    groups = LidConfig().confusable  # inside its group, Malay read as Indonesian is not an error
    lenient = sum(g == p or any(g in grp and p in grp for grp in groups) for g, p in zip(gold, pred, strict=True))
    assert lenient / len(gold) >= 0.97


def test_lid_decisions():
    cfg = LidConfig()
    assert decide("und", "tha", 0.95, cfg).lang == "tha"
    assert decide("und", "tha", 0.3, cfg).lang == "und"  # not trusted
    assert decide("eng", "tha", 0.99, cfg).reason == "lid_mismatch"
    assert decide("eng", "tha", 0.6, cfg).reason is None  # not confident enough to contradict
    assert decide("zsm", "ind", 0.99, cfg) .lang == "zsm"  # confusable: the label stands
    assert decide("eng", "tha", 0.99, LidConfig(on_mismatch="relabel")).lang == "tha"
    assert predict([""])[0] == ("und", 0.0)
    # outside the 15 languages codes differ (ingest keeps 'jpn', lid.176 says 'ja'): not a mismatch
    assert decide("jpn", "ja", 0.99, cfg).reason is None
    assert decide("jpn", "tha", 0.99, cfg).reason == "lid_mismatch"
    assert decide("tha", "ja", 0.99, cfg).reason == "lid_mismatch"


def test_clean_stage_normalises_relabels_drops_and_reruns_identically(spark, lake_dir):
    thai = "\n".join(load_udhr("tha")[1] + load_udhr("tha")[2])
    eng = "\n".join(load_udhr("eng")[1] + load_udhr("eng")[2] + load_udhr("eng")[3])
    rows = [("t1", "tha", thai.replace(" ", "\u00a0", 3) + "\u200b"), ("t2", "und", thai),
            ("t3", "eng", thai),  # Thai text labelled English: a confident contradiction
            ("e1", "eng", eng), ("e2", "eng", "Buy now!"), ("e3", "eng", "Lorem ipsum dolor sit amet.\n" + eng),
            ("x1", "eng", "\u200b \u00a0 \x07"), ("n1", "eng", None)]  # null text: a table not from ingest
    schema = "doc_id string, lang string, source string, text string"
    lake.write_table(spark.createDataFrame([(d, lang, "t", t) for d, lang, t in rows], schema),
                     lake_dir, "docs_raw", mode="error")
    result = clean(spark, lake_dir, CleanConfig())
    assert (result.records, result.kept, result.dropped) == (8, 3, 5)
    assert result.by_reason == {"lid_mismatch": 1, "too_short": 1, "lorem_ipsum": 1, "empty_after_cleaning": 2}
    kept = {r["doc_id"]: r for r in lake.read_arrow(lake_dir, "docs_clean").to_pylist()}
    assert set(kept) == {"t1", "t2", "e1"}
    assert kept["t2"]["lang"] == "tha" and kept["t2"]["lang_given"] == "und" and kept["t2"]["lid_score"] > 0.9
    assert "\u00a0" not in kept["t1"]["text"] and "\u200b" not in kept["t1"]["text"]
    drops = {r["doc_id"]: r for r in lake.read_arrow(lake_dir, "drops").to_pylist()}
    assert drops["t3"]["stage"] == "lid" and drops["t3"]["detail"].startswith("given eng, predicted tha")
    assert drops["e2"]["stage"] == "clean" and drops["e2"]["detail"] == "units=2.0 < 50.0"
    again = clean(spark, lake_dir, CleanConfig())
    assert again.by_reason == result.by_reason
    assert sorted(lake.read_arrow(lake_dir, "drops").to_pylist(), key=lambda r: r["doc_id"]) == \
        sorted(drops.values(), key=lambda r: r["doc_id"])
