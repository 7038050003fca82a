"""Normalisation and n-gram hashing, without Spark: counts come from how the texts were built."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from data_engine.contamination import CHAR_NGRAM, ContaminationConfig
from data_engine.contamination.ngrams import Lengths, item_ngrams, ngram_hashes, normalise
from data_engine.errors import ConfigError

WORDS20 = ("pemerintah kota bandung meresmikan taman baru yang dilengkapi perpustakaan kolam ikan "
           "jalur sepeda serta ruang bermain anak pada hari minggu").split()
assert len(WORDS20) == 20 and len(set(WORDS20)) == 20

# Sentences of SIB-200 (FLORES-200, CC BY-SA 4.0) with their punctuation taken out by hand, so a
# test knows how many characters each has without running the normaliser.
SPACELESS_CORES = {
    "tha": "หากคุณต้องการเรียนรู้ที่จะขว้างบูมเมอแรงให้กลับมาที่มือของคุณ ตรวจสอบให้แน่ใจว่าคุณมีบูมเมอแรงที่เหมาะสมสำหรับการกลับมา",
    "lao": "ໝູ່ເກາະ cook ແມ່ນປະເທດເກາະທີ່ບໍ່ຂຶ້ນກັບນິວຊີແລນ ເຊິ່ງຕັ້ງຢູ່ໃນ polynesia ພາກກາງຂອງມະຫາສະໝຸດປາຊີຟິກຕອນໃຕ້",
    "khm": "សូមក្រឡេកមើលដំណើរកំសាន្តដែលភ្នាក់ងារកំពុងផ្សព្វផ្សាយ នៅលើគេហទំព័រក្តីឬនៅតាមបង្អួចទ្វាក្តី",
    "mya": "နှင်းလျှောတောင်ကုန်းစီးခြင်းသည် အနည်းဆုံး ၁၇ ရာစုမှစတင်ခဲ့ပြီး ၁၈၆၁ တွင် ပထမဆုံး အပန်းဖြေနှင်းလျှောစီးကလပ်ကို "
           "ဩစတေးလျတွင် နော်ဝေသားများက ဖွင့်လှစ်ခဲ့သည်",
    "zho": "开始旅行写作最简单的方法就是在一个资深旅行博客网站上磨练你的技能",
}


def chars(core: str) -> int:
    return len("".join(core.split()))


def hashes(texts, langs, lengths):
    h, _ = ngram_hashes(texts, langs, lengths)
    return set(h.tolist())


def test_normalise_folds_case_punctuation_and_unicode_form_but_keeps_marks():
    assert normalise("  Hello,   WORLD!! (again) ") == "hello world again"
    assert normalise("Tie\u0302\u0301ng Vie\u0323\u0302t") == normalise("Tiếng Việt") == "tiếng việt"  # NFD → NFC
    assert normalise("ข่าว, “วันนี้”!") == "ข่าว วันนี้"
    thai = "ไก่ ไกล ไก"  # chicken, far, and the bare consonants
    assert normalise(thai).split() == ["ไก่", "ไกล", "ไก"]
    assert len(set(normalise(thai).split())) == 3  # stripping Mn would merge ไก่ into ไก
    assert normalise("ការ\u200bរត់") == "ការ រត់"  # a zero-width space separates like a space


def test_twenty_words_give_eight_distinct_13_grams_found_through_case_and_punctuation():
    k, item = item_ngrams(normalise(" ".join(WORDS20)), "ind", "word", 13)
    assert k == 13 and len(item) == 20 - 13 + 1
    shouting = " ".join(WORDS20[:7]).upper() + ", — " + " ".join(WORDS20[7:]).title() + "!!!"
    doc = "Berita lain di awal. " + shouting + " Lalu cerita lain sama sekali."
    assert set(item.tolist()) <= hashes([doc], ["ind"], Lengths(word=(13,)))


def test_a_document_sharing_only_12_consecutive_words_shares_no_13_gram():
    _, item = item_ngrams(normalise(" ".join(WORDS20)), "ind", "word", 13)
    doc = "awal yang berbeda " + " ".join(WORDS20[4:16]) + " akhir yang berbeda juga"
    assert not set(item.tolist()) & hashes([doc], ["ind"], Lengths(word=(13,)))


def test_word_windows_never_span_two_documents():
    _, item = item_ngrams(normalise(" ".join(WORDS20[:13])), "ind", "word", 13)
    texts = [" ".join(WORDS20[:7]), " ".join(WORDS20[7:13])]
    assert not set(item.tolist()) & hashes(texts, ["ind", "ind"], Lengths(word=(13,)))
    assert set(item.tolist()) <= hashes([" ".join(WORDS20[:13])], ["ind"], Lengths(word=(13,)))


def test_a_short_item_is_one_n_gram_of_its_whole_text():
    short = "Taman baru di kota Bandung!"
    k, item = item_ngrams(normalise(short), "ind", "word", 13)
    assert k == 5 and len(item) == 1
    found = hashes(["kami pergi ke taman baru di kota bandung kemarin"], ["ind"], Lengths(word=(13, 5)))
    assert set(item.tolist()) <= found
    partial = hashes(["kami pergi ke taman baru di kota jakarta kemarin"], ["ind"], Lengths(word=(13, 5)))
    assert not set(item.tolist()) & partial


@pytest.mark.parametrize("lang", sorted(SPACELESS_CORES))
def test_spaceless_items_use_character_n_grams_robust_to_spacing_and_punctuation(lang):
    core = SPACELESS_CORES[lang]
    n = CHAR_NGRAM[lang]
    c = chars(core)
    k, item = item_ngrams(normalise(core), lang, "char", n)
    assert (k, len(item)) == (min(n, c), max(c - n + 1, 1))
    pieces = core.split()
    respaced = "\u200b".join(pieces[:2]) + "，“" + "  ".join(pieces[2:]) + "”。"  # other separators
    doc = "นอกเรื่อง 前言 " + respaced.upper() + " 后记 ท้ายเรื่อง"
    assert set(item.tolist()) <= hashes([doc], [lang], Lengths(char=((lang, (n,)),)))


@pytest.mark.parametrize("lang", ["tha", "lao", "khm", "mya"])
def test_text_differing_only_by_combining_marks_shares_no_character_n_gram(lang):
    core = SPACELESS_CORES[lang]
    bare = "".join(ch for ch in core if unicodedata.category(ch) != "Mn")
    assert bare != core
    n = CHAR_NGRAM[lang]
    _, item = item_ngrams(normalise(core), lang, "char", n)
    # datatrove's normalisation (NFD, drop Mn) would make the two identical:
    strip = lambda t: "".join(ch for ch in unicodedata.normalize("NFD", t) if unicodedata.category(ch) != "Mn")  # noqa: E731
    assert strip(core) == strip(bare)
    assert not set(item.tolist()) & hashes([bare], [lang], Lengths(char=((lang, (n,)),)))


def test_character_n_grams_are_only_computed_for_documents_of_that_language():
    core = SPACELESS_CORES["zho"]
    _, item = item_ngrams(normalise(core), "zho", "char", 23)
    lengths = Lengths(word=(13,), char=(("zho", (23,)),))
    assert set(item.tolist()) <= hashes([core], ["zho"], lengths)
    assert not set(item.tolist()) & hashes([core], ["eng"], lengths)


def test_hashes_do_not_depend_on_batching_or_position():
    texts = [" ".join(WORDS20[i:] + WORDS20[:i]) for i in range(6)] + [SPACELESS_CORES["tha"], None, ""]
    langs = ["ind"] * 6 + ["tha", "ind", "ind"]
    lengths = Lengths(word=(13, 3), char=(("tha", (72, 9)),))
    h1, d1 = ngram_hashes(texts, langs, lengths, batch_chars=10_000_000)
    h2, d2 = ngram_hashes(texts, langs, lengths, batch_chars=50)
    assert sorted(zip(d1.tolist(), h1.tolist(), strict=True)) == sorted(zip(d2.tolist(), h2.tolist(), strict=True))
    # 20 words per rotation: 8 13-grams + 18 3-grams each; no n-gram from the None and empty texts
    per_doc = np.bincount(d1, minlength=len(texts))
    assert per_doc[:6].tolist() == [8 + 18] * 6 and per_doc[7:].tolist() == [0, 0]
    c = chars(SPACELESS_CORES["tha"])
    assert per_doc[6] == (c - 72 + 1) + (c - 9 + 1)  # its two space-separated runs make no 3- or 13-word window


def test_config_from_yaml_overrides_one_language_and_rejects_bad_values(tmp_path):
    from data_engine.config import section

    path = tmp_path / "c.yaml"
    path.write_text("contamination:\n  char_ngram: {tha: 50}\n  share_threshold: 0.8\n  drop_rule: share\n")
    cfg = section(str(path), "contamination", ContaminationConfig)
    assert (cfg.n("tha"), cfg.n("lao"), cfg.n("eng"), cfg.unit("zho")) == (50, 72, 13, "char")
    assert (cfg.share_threshold, cfg.drop_rule) == (0.8, "share")
    path.write_text("contamination:\n  drop_rule: some\n  word_ngrams: 8\n")
    with pytest.raises(ConfigError, match="2 problem") as err:
        section(str(path), "contamination", ContaminationConfig)
    assert "contamination.word_ngrams: unknown key" in str(err.value)
    assert "contamination.drop_rule: expected one of 'any', 'share', got 'some'" in str(err.value)
