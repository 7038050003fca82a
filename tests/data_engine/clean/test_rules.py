"""Every cleaning rule has a case that fires and one that does not, in a spaced and a spaceless
language; the statistics are tested on real-looking text, the rule logic through Spark SQL."""

from __future__ import annotations

import pytest

from data_engine.clean.config import CleanConfig
from data_engine.clean.normalize import clean_text
from data_engine.clean.rules import RULES, first_failure, thresholds_frame, with_thresholds
from data_engine.clean.stats import STAT_NAMES, batch_stats
from data_engine.sample.corpus import load_udhr

ENG = "\n".join(load_udhr("eng")[1] + load_udhr("eng")[2] + load_udhr("eng")[3])
THA = "\n".join(load_udhr("tha")[1] + load_udhr("tha")[2] + load_udhr("tha")[3])


def stats(text: str) -> dict[str, float]:
    return batch_stats([clean_text(text)])[0]


def test_normalisation():
    raw = "Caf\u0065\u0301\u00a0au\tlait\u200b!\r\n\n\n\n  ภาษา\u200bไทย  \x07\ufeff"
    assert clean_text(raw) == "Café au lait!\n\nภาษาไทย"
    assert clean_text("a\u200db") == "a\u200db"  # ZWJ stays
    # other line-break conventions break lines instead of gluing words
    assert clean_text("Hello\rWorld\x0cNext page\x85end\u2028x") == "Hello\nWorld\nNext page\nend\nx"
    # NFC after removals: a soft hyphen between a letter and its combining accent
    assert clean_text("e\u00ad\u0301") == "\u00e9"


def test_repetition_counts_repeats_not_first_occurrences():
    """Gopher / datatrove definitions, on which the FineWeb-2 thresholds were set."""
    lines = ["Site header", *ENG.split("\n")[:3], "Site header"]
    s = stats("\n".join(lines))
    assert s["dup_line_frac"] == pytest.approx(1 / 5)  # one repeat among five lines
    assert s["dup_line_char_frac"] == pytest.approx(len("Site header") / sum(len(ln) for ln in lines))
    assert stats("one two three four five six seven eight nine ten")["dup_5gram_frac"] == 0
    twice = stats("one two three four five. one two three four five.")["dup_5gram_frac"]
    assert twice == pytest.approx(len("onetwothreefourfive") / (2 * len("onetwothreefourfive")))


def test_statistics_of_a_huge_document_skip_the_ngram_tables():
    huge = "ก" * 200_000
    assert batch_stats([huge], max_units=100_000)[0]["top_2gram_frac"] == 0.0  # too_long decides
    assert batch_stats(["กข" * 500], max_units=100_000)[0]["top_2gram_frac"] > 0.9


def test_rule_sections_are_validated():
    from data_engine.errors import ConfigError

    assert CleanConfig(rules={"fra": {"min_units": 20}}).thresholds("fra").min_units == 20
    for bad in ({"thai": {"min_units": 20}}, {"tha": {"min_units": None}}, {"tha": {"drop_lorem_ipsum": "no"}},
                {"tha": {"min_unit": 20}}, {"tha": 5}):
        with pytest.raises(ConfigError):
            CleanConfig(rules=bad)


@pytest.mark.parametrize(("stat", "bad", "good"), [
    ("units", "Too short to keep.", ENG),
    ("units", "ข่าวสั้น", THA),
    ("mean_line_chars", "\n".join(["Home", "News", "Sport", "Menu"] * 20), ENG),
    ("mean_line_chars", "\n".join(["หน้าแรก", "ข่าว", "กีฬา"] * 20), THA),
    ("line_punct_frac", "\n".join(f"Item number {i} in our big list" for i in range(30)), ENG),
    ("symbol_ratio", ENG.replace(" ", " # ", 200), ENG),
    ("digit_ratio", ENG + "\n" + "0123456789 " * 300, ENG),
    ("url_ratio", "\n".join(f"see https://example.org/page/{i}/with/a/long/path" for i in range(40)), ENG),
    ("dup_line_frac", "\n".join([ENG.split("\n")[0]] * 10), ENG),
    ("dup_line_frac", "\n".join([THA.split("\n")[0]] * 10), THA),
    ("dup_line_char_frac", "\n".join([ENG.split("\n")[0]] * 10), ENG),
    ("top_2gram_frac", "buy now " * 200, ENG),
    ("top_2gram_frac", "ซื้อเลย" * 200, THA),
    ("dup_5gram_frac", ("cheap shoes best price online " * 40), ENG),
    ("dup_5gram_frac", "ราคาถูกที่สุดในประเทศไทย" * 30, THA),
    ("lorem_ipsum", "Lorem ipsum dolor sit amet. " + ENG, ENG),
    ("curly_ratio", ENG + "\n" + "{ } " * 200, ENG),
    ("code_line_frac", "\n".join(["var x = 1;", "function f() {", "return x;", "}"] * 10), ENG),
    ("bullet_line_frac", "\n".join(f"- point {i} of the list." for i in range(30)), ENG),
    ("bullet_line_frac", "\n".join(f"• ข้อที่ {i} ในรายการนี้" for i in range(30)), THA),
    ("letter_frac", "ก๑@#ข2%&ค~^" * 60, THA),
    ("letter_frac", ENG + "\n" + "@#%&*+=<>~^|" * 150, ENG),
    ("dup_phrase_frac", ", ".join(["ที่พัก", "โรงแรม", "ราคาถูก", "เชียงใหม่", "ทัวร์"] * 30), THA),
    ("dup_phrase_frac", " | ".join(["ဟိုတယ်", "ခရီးသွား", "စျေးပေါ", "ရန်ကုန်"] * 30), "\n".join(load_udhr("mya")[1])),
])
def test_statistic_separates_bad_from_good(stat, bad, good):
    low_is_bad = stat in ("units", "mean_line_chars", "line_punct_frac", "letter_frac")
    b, g = stats(bad)[stat], stats(good)[stat]
    assert (b < g) if low_is_bad else (b > g), (stat, b, g)


def test_letter_runs_do_not_break_inside_a_syllable():
    """Thai vowels and tone marks, the Burmese virama and Khmer subscripts are combining marks: they
    are letters for `letter_frac` and part of the run, so a repeated word is one repeated run."""
    assert stats("ကမ္ဘာ ကမ္ဘာ")["dup_phrase_frac"] == pytest.approx(0.5)
    assert stats("ที่พัก ที่พัก ที่พัก ที่พัก")["dup_phrase_frac"] == pytest.approx(0.75)
    assert stats("ក្រុង ភ្នំពេញ")["letter_frac"] == 1.0 and stats("ក្រុង ភ្នំពេញ")["dup_phrase_frac"] == 0.0
    assert stats("ก 1 2 3")["letter_frac"] == pytest.approx(0.25)
    huge = "ก " * 150_000
    assert batch_stats([huge], max_units=100_000)[0]["dup_phrase_frac"] == 0.0  # too_long decides


def test_thai_units_are_characters_and_english_units_words():
    assert stats("ภาษาไทย เขียน")["units"] == 12
    assert stats("two words")["units"] == 2


def test_each_rule_fires_on_its_statistic_and_not_below_it(spark):
    """The SQL rule logic: for every rule, one document just past its threshold (and inside every
    other) and one just inside; per-language thresholds come from the lang's section."""
    cfg = CleanConfig()
    thr = cfg.thresholds("eng")
    safe = {"units": 500.0, "mean_line_chars": 80.0, "line_punct_frac": 1.0, "lorem_ipsum": 0.0, "letter_frac": 1.0}
    rows = []
    for name, stat, op, field in RULES:
        limit = 0.5 if field == "_lorem" else float(getattr(thr, field))
        past = limit - 0.01 if op == "<" else limit + 0.01
        inside = limit + 0.01 if op == "<" else limit - 0.01
        for tag, value in (("fire", past), ("keep", inside)):
            values = {s: safe.get(s, 0.0) for s in STAT_NAMES}
            values[stat] = value
            rows.append((f"{name}:{tag}", "eng", *[values[s] for s in STAT_NAMES]))
    # Thai: 120 characters is too short for Thai (150) and a line without '.' is normal there.
    # Character soup and keyword lists: Thai's own thresholds (0.8, 0.5) fire, English's (off) do not.
    thai = {s: 0.0 for s in STAT_NAMES} | {"units": 120.0, "mean_line_chars": 80.0, "letter_frac": 1.0,
                                        "line_punct_frac": 1.0}
    ok = thai | {"units": 200.0}
    for lang in ("tha", "eng"):
        rows.append((f"{lang}:short", lang, *[thai[s] for s in STAT_NAMES]))
        rows.append((f"{lang}:ok", lang, *[ok[s] for s in STAT_NAMES]))
        rows.append((f"{lang}:soup", lang, *[(ok | {"letter_frac": 0.62})[s] for s in STAT_NAMES]))
        rows.append((f"{lang}:keywords", lang, *[(ok | {"dup_phrase_frac": 0.85})[s] for s in STAT_NAMES]))
    df = spark.createDataFrame(rows, "doc_id string, lang string, " + ", ".join(f"_s_{s} double" for s in STAT_NAMES))
    reason, detail = first_failure()
    got = {r.doc_id: (r.reason, r.detail) for r in with_thresholds(df, thresholds_frame(spark, cfg, ["eng", "tha"]))
           .select("doc_id", reason.alias("reason"), detail.alias("detail")).collect()}
    for name, *_ in RULES:
        assert got[f"{name}:fire"][0] == name, (name, got[f"{name}:fire"])
        assert got[f"{name}:keep"] == (None, None), (name, got[f"{name}:keep"])
    assert got["tha:short"] == ("too_short", "units=120.0 < 150.0")
    assert got["tha:ok"] == (None, None)
    assert got["tha:soup"] == ("non_letters", "letter_frac=0.62 < 0.8")
    assert got["tha:keywords"] == ("duplicate_phrases", "dup_phrase_frac=0.85 > 0.5")
    assert got["eng:soup"] == got["eng:keywords"] == got["eng:short"] == (None, None)
