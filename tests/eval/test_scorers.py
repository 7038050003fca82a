"""Every scorer on hand-checked examples, and CausalLM against hand loops over the model's logits."""

from __future__ import annotations

import math
import unicodedata
from fractions import Fraction
from pathlib import Path

import pytest

from data_engine.errors import ConfigError, InputError
from eval.metrics import (
    CorpusTotals,
    aggregate,
    bleu,
    choice_scores,
    chrf_pp,
    corpus_metrics,
    corpus_totals,
    exact_match,
    f1,
    normalised,
    normalize_answer,
)
from eval.metrics.corpus import count_words
from eval.metrics.translation import bleu_tokenizer
from eval.model import CausalLM, ModelConfig, cut_at_stop, rolling_windows
from eval.segment import words

QWEN_ENDOFTEXT = 151643  # Qwen2.5 has no BOS token, so lm-eval's prefix token is this EOS

# ---------------------------------------------------------------- multiple choice


def test_acc_norm_counts_characters_and_acc_bytes_counts_bytes():
    # "ไทย": 3 characters, 9 UTF-8 bytes; "Thailand": 8 characters, 8 bytes.
    # per choice: ll -6 / -12; per char -2.0 / -1.5; per byte -0.667 / -1.5
    scores = choice_scores([-6.0, -12.0], ["ไทย", "Thailand"], gold=1)
    assert scores == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 0.0}
    assert choice_scores([-6.0, -12.0], ["ไทย", "Thailand"], gold=0) == {"acc": 1.0, "acc_norm": 0.0,
                                                                           "acc_bytes": 1.0}


def test_acc_norm_on_vietnamese_depends_on_unicode_form():
    # "Hà Nội" is 6 code points in NFC, 9 in NFD (à = a + grave, ộ = o + circumflex + dot below).
    nfc, nfd = "Hà Nội", unicodedata.normalize("NFD", "Hà Nội")
    assert (len(nfc), len(nfd)) == (6, 9)
    # lls -6.6 and -5.0: NFC -1.1 per char vs "Hanoi" -1.0 → Hanoi; NFD -0.733 vs -1.0 → NFD.
    assert choice_scores([-6.6, -5.0], [nfc, "Hanoi"], gold=0)["acc_norm"] == 0.0
    assert choice_scores([-6.6, -5.0], [nfd, "Hanoi"], gold=0)["acc_norm"] == 1.0


def test_ties_go_to_the_first_choice_like_numpy_argmax():
    assert choice_scores([-2.0, -2.0, -3.0], ["a", "b", "c"], gold=0)["acc"] == 1.0
    assert choice_scores([-2.0, -2.0, -3.0], ["a", "b", "c"], gold=1)["acc"] == 0.0


def test_mutual_information_subtracts_the_unconditional_likelihood():
    # conditional -3, -4; unconditional -5, -1 → differences 2, -3 → choice 0
    scores = choice_scores([-3.0, -4.0], ["x", "y"], gold=0, unconditional=[-5.0, -1.0])
    assert scores["acc_mutual_info"] == 1.0


@pytest.mark.parametrize("lls, choices, gold, message", [
    ([-1.0], ["a", "b"], 0, "one log-likelihood per choice"),
    ([-1.0, -2.0], ["a", "b"], 2, "outside"),
    ([-1.0, -2.0], ["a", ""], 0, "empty"),
])
def test_choice_scores_rejects_bad_items(lls, choices, gold, message):
    with pytest.raises(ValueError, match=message):
        choice_scores(lls, choices, gold)


# ---------------------------------------------------------------- corpus perplexity


def test_bits_per_byte_is_a_ratio_of_corpus_sums():
    texts = ["a b", "hello world again"]  # 3 + 17 bytes, 2 + 3 words
    totals = corpus_totals([-3.0, -40.0], texts, [2, 4], lang="eng")
    assert totals == CorpusTotals(loglikelihood=-43.0, bytes=20, tokens=6, words=5, docs=2)
    m = corpus_metrics(totals)
    assert m["bits_per_byte"] == pytest.approx(43 / 20 / math.log(2), rel=1e-12)  # 3.1018
    mean_of_ratios = (3 / 3 + 40 / 17) / 2 / math.log(2)  # 2.4185: what a per-doc mean would give
    assert abs(m["bits_per_byte"] - mean_of_ratios) > 0.5
    assert m["byte_perplexity"] == pytest.approx(math.exp(43 / 20), rel=1e-12)
    assert m["token_perplexity"] == pytest.approx(math.exp(43 / 6), rel=1e-12)
    assert m["word_perplexity"] == pytest.approx(math.exp(43 / 5), rel=1e-12)
    assert m["bits_per_doc"] == pytest.approx(43 / math.log(2) / 2, rel=1e-12)


@pytest.mark.parametrize("lang", ["tha", "lao", "khm", "mya", "zho", "th", "zh-Hans"])
def test_word_perplexity_is_absent_for_scripts_without_spaces(lang):
    totals = corpus_totals([-30.0], ["ภาษาไทยเป็นภาษาที่สวยงาม"], [7], lang=lang)
    assert totals.words is None
    m = corpus_metrics(totals)
    assert "word_perplexity" not in m
    assert totals.bytes == 72  # 24 Thai characters × 3 bytes
    assert m["bits_per_byte"] == pytest.approx(30 / 72 / math.log(2), rel=1e-12)


def test_word_count_keeps_lm_eval_quirks_and_totals_pool():
    assert count_words("") == 1 and count_words(" a b") == 3 and count_words("a\n\nb") == 2
    pooled = (CorpusTotals(-1.0, 4, 2, 3, 1) + CorpusTotals(-2.0, 6, 3, None, 2))
    assert pooled == CorpusTotals(-3.0, 10, 5, None, 3)
    with pytest.raises(ValueError, match="one log-likelihood and one token count"):
        corpus_totals([-1.0], ["a", "b"], [1, 1], lang="eng")
    with pytest.raises(ValueError, match="non-empty document"):
        corpus_metrics(CorpusTotals(0.0, 0, 0, 0, 1))


# ---------------------------------------------------------------- segmentation


def test_thai_lao_khmer_are_segmented_into_words():
    assert words("ภาษาไทยมาก", "tha") == ["ภาษาไทย", "มาก"]
    assert words("ภาษา ไทย  ดี", "th") == ["ภาษา", "ไทย", "ดี"]
    # Lao: "Lao language is a beautiful language"
    assert words("ພາສາລາວ ແມ່ນພາສາທີ່ສວຍງາມ", "lao") == ["ພາສາລາວ", "ແມ່ນ", "ພາສາ", "ທີ່", "ສວຍງາມ"]
    # Khmer: "Khmer language is a beautiful language"
    assert words("ភាសាខ្មែរគឺជាភាសាដ៏ស្រស់ស្អាត", "khm") == ["ភាសា", "ខ្មែរ", "គឺជា", "ភាសា", "ដ៏", "ស្រស់ស្អាត"]


def test_burmese_is_split_into_syllables():
    # "Myanmar country": မြန် (consonant + medial + killed na) မာ နိုင် (killed nga) ငံ
    assert words("မြန်မာနိုင်ငံ", "mya") == ["မြန်", "မာ", "နိုင်", "ငံ"]
    # a stacked consonant (virama U+1039) stays in its syllable; digits and Latin runs stay whole;
    # zero-width spaces separate like spaces
    assert words("မန္တလေး\u200b၁၂၃ ABC။", "mya") == ["မန္တ", "လေး", "၁၂၃", "ABC", "။"]


def test_chinese_is_split_into_characters_with_latin_runs_whole():
    assert words("我爱北京，iPhone12 很好。", "zho") == ["我", "爱", "北", "京", "，", "iPhone12", "很", "好", "。"]
    assert words("  Hello,  world ", "eng") == ["Hello,", "world"]


# ---------------------------------------------------------------- QA


def test_normalize_answer_is_squad_with_unicode_punctuation():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("«Hà Nội»。", lang="vie") == "hà nội"
    assert normalize_answer("a cat", lang="ind") == "a cat"  # articles are English only
    assert normalize_answer("กรุงเทพฯ!") == "กรุงเทพฯ"  # ฯ (PAIYANNOI) is a letter, not punctuation


def test_english_em_and_f1_are_squad():
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower", "Paris"], "eng") == 1.0
    # pred [eiffel, tower, in, paris] vs [eiffel, tower]: P 2/4, R 1 → 2/3 (vs [paris]: 0.4)
    assert f1("Eiffel Tower in Paris", ["Eiffel Tower", "Paris"], "eng") == pytest.approx(2 / 3)
    assert f1("nothing", ["Eiffel Tower"], "eng") == 0.0
    assert f1("the", ["a"], "eng") == 1.0  # both normalise to no tokens (SQuAD v2)


def test_thai_em_and_f1_use_words():
    # gold ["ภาษาไทย"]; prediction ["ภาษาไทย", "มาก"]: P 1/2, R 1 → F1 2/3; whitespace F1 would be 0
    assert exact_match("ภาษาไทยมาก", ["ภาษาไทย"], "tha") == 0.0
    assert f1("ภาษาไทยมาก", ["ภาษาไทย"], "tha") == pytest.approx(2 / 3)
    assert exact_match("ภาษา ไทย", ["ภาษาไทย"], "tha") == 1.0  # a space is not a word boundary in Thai


def test_chinese_f1_is_per_character():
    # 北 京 大 学 vs 北 京: P 2/4, R 1 → 2/3
    assert f1("北京大学", ["北京"], "zho") == pytest.approx(2 / 3)
    assert exact_match("北京。", ["北京"], "zho") == 1.0


def test_lao_khmer_burmese_f1_are_partial():
    # Lao: 1 of the gold's 5 words → P 1, R 1/5 → 1/3
    assert f1("ພາສາລາວ", ["ພາສາລາວ ແມ່ນພາສາທີ່ສວຍງາມ"], "lao") == pytest.approx(1 / 3)
    # Khmer: [ភាសា, ខ្មែរ] vs 6 gold words sharing both → P 1, R 2/6 → 1/2
    assert f1("ភាសាខ្មែរ", ["ភាសាខ្មែរគឺជាភាសាដ៏ស្រស់ស្អាត"], "khm") == pytest.approx(1 / 2)
    # Burmese: [မြန်, မာ] vs [မြန်, မာ, နိုင်, ငံ] → P 1, R 1/2 → 2/3
    assert f1("မြန်မာ", ["မြန်မာနိုင်ငံ"], "mya") == pytest.approx(2 / 3)


def test_vietnamese_em_ignores_unicode_form():
    assert exact_match(unicodedata.normalize("NFD", "Hà Nội"), ["Hà Nội"], "vie") == 1.0


def test_qa_rejects_a_bare_gold_string():
    with pytest.raises(ValueError, match="non-empty sequence"):
        exact_match("x", "x", "eng")


# ---------------------------------------------------------------- translation


def test_chrf_pp_matches_a_hand_computation():
    # "ab cd" vs "ab ce", whitespace dropped for characters: "abcd" vs "abce".
    # char 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0 (5-, 6-grams absent: not counted);
    # words [ab, cd] vs [ab, ce]: 1-grams 1/2, 2-grams 0. P = R everywhere → F = mean = 29/72.
    assert chrf_pp(["ab cd"], ["ab ce"]) == pytest.approx(100 * 29 / 72, abs=1e-9)


def test_chrf_pp_sums_statistics_over_the_corpus():
    # segments ("ab cd"|"ab ce") and ("ab"|"abc"); per order (hyp, ref, match) summed:
    # c1 (6,7,5) c2 (4,5,3) c3 (2,3,1) c4 (1,1,0) w1 (3,3,1) w2 (1,1,0)
    p = (Fraction(5, 6) + Fraction(3, 4) + Fraction(1, 2) + 0 + Fraction(1, 3) + 0) / 6
    r = (Fraction(5, 7) + Fraction(3, 5) + Fraction(1, 3) + 0 + Fraction(1, 3) + 0) / 6
    expected = float(100 * 5 * p * r / (4 * p + r))  # β = 2: 34.25, not the segment mean 41.35
    assert chrf_pp(["ab cd", "ab"], ["ab ce", "abc"]) == pytest.approx(expected, abs=1e-9)
    assert chrf_pp(["same text"], ["same text"]) == pytest.approx(100.0)


def test_bleu_uses_characters_for_thai():
    import sacrebleu

    hyp, ref = ["ภาษาไทยดี"], ["ภาษาไทยดีมาก"]
    assert bleu(hyp, ref, lang="eng") == 0.0  # 13a: one "word" each, no match
    assert bleu(hyp, ref, lang="tha") == pytest.approx(sacrebleu.corpus_bleu(hyp, [ref], tokenize="char").score)
    assert bleu(hyp, ref, lang="tha") > 30
    assert bleu_tokenizer("zh") == "zh" and bleu_tokenizer("khm") == "char" and bleu_tokenizer("vie") == "13a"
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        bleu(["a", "b"], ["a"], lang="eng")


# ---------------------------------------------------------------- normalisation


def test_normalised_scores_and_aggregates():
    assert normalised(0.625, 0.25) == pytest.approx(50.0)  # 4-way MC: (0.625-0.25)/0.75
    assert normalised(0.2, 0.25) == 0.0  # below chance clips to 0
    assert normalised(80.0, 0.0, 100.0) == pytest.approx(80.0)
    assert aggregate([0.5, 1.0]) == 0.75
    assert aggregate([0.5, 1.0], [3, 1]) == 0.625
    with pytest.raises(ValueError, match="above the chance"):
        normalised(0.5, 1.0)
    with pytest.raises(ValueError, match="empty"):
        aggregate([])


# ---------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def reference(tiny_hf_model: Path):
    """The same checkpoint through plain transformers, for hand loops."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_hf_model, fix_mistral_regex=False)
    return tok, AutoModelForCausalLM.from_pretrained(tiny_hf_model).eval()


@pytest.fixture(scope="module")
def lm(tiny_hf_model: Path) -> CausalLM:
    return CausalLM(tiny_hf_model, ModelConfig(batch_size=3, device="cpu"))


def _hand_ll(model, inp: list[int], cont: list[int]) -> tuple[float, bool]:
    """Σ log-softmax over the last len(cont) positions of one unpadded forward pass."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([inp])).logits[0].double()
    total, greedy = 0.0, True
    for j, token in enumerate(cont):
        row = logits[len(inp) - len(cont) + j]
        total += float(row[token] - torch.logsumexp(row, dim=0))
        greedy &= int(row.argmax()) == token
    return total, greedy


def test_continuation_loglikelihood_equals_a_hand_loop(lm, reference):
    tok, model = reference
    ctx, cont = tok.encode("Hello"), tok.encode(" world")
    assert tok.encode("Hello world") == ctx + cont  # the split lm-eval makes
    expected, greedy = _hand_ll(model, (ctx + cont)[:-1], cont)
    (ll, is_greedy), = lm.loglikelihood([("Hello", " world")])
    assert ll == pytest.approx(expected, abs=1e-4) and is_greedy == greedy
    # the context's trailing space moves into the continuation
    (moved, _), = lm.loglikelihood([("Hello ", "world")])
    assert moved == ll


def test_empty_context_is_conditioned_on_the_prefix_token(lm, reference):
    tok, model = reference
    cont = tok.encode("สวัสดี")
    expected, _ = _hand_ll(model, [QWEN_ENDOFTEXT] + cont[:-1], cont)
    (ll, _), = lm.loglikelihood([("", "สวัสดี")])
    assert ll == pytest.approx(expected, abs=1e-4)


def test_long_requests_are_cut_from_the_left(tiny_hf_model, reference):
    tok, model = reference
    short = CausalLM(tiny_hf_model, ModelConfig(batch_size=2, max_length=8, device="cpu"))
    context = "ภาษาไทยเป็นภาษาที่สวยงามมาก และมีประวัติศาสตร์ยาวนาน"
    ctx, whole = tok.encode(context), tok.encode(context + " ครับ")
    cont = whole[len(ctx):]
    assert len(whole) > 9
    expected, _ = _hand_ll(model, whole[-9:][:-1], cont)
    (ll, _), = short.loglikelihood([(context, " ครับ")])
    assert ll == pytest.approx(expected, abs=1e-4)


def test_batched_scores_equal_unbatched(tiny_hf_model, lm):
    requests = [("The capital of Thailand is", " Bangkok"), ("", "hello"), ("Thủ đô của Việt Nam là", " Hà Nội"),
                ("中国的首都是", "北京"), ("A", " B"), ("A", " C"), ("คำถาม: เมืองหลวงของไทยคือ", " กรุงเทพ"),
                ("The capital of Thailand is", " Bangkok")]
    single = CausalLM(tiny_hf_model, ModelConfig(batch_size=1, device="cpu"))
    batched, unbatched = lm.loglikelihood(requests), single.loglikelihood(requests)
    for (a, ga), (b, gb) in zip(batched, unbatched, strict=True):
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)) and ga == gb
    assert batched[0] == batched[-1]


def test_rolling_windows_predict_every_token_once():
    assert rolling_windows([1, 2, 3, 4, 5], 0, 2) == [([0], [1, 2]), ([2], [3, 4]), ([3, 4], [5])]
    assert rolling_windows([], 0, 4) == []


def test_rolling_loglikelihood_equals_a_hand_loop(tiny_hf_model, reference):
    tok, model = reference
    text = "Selamat pagi, apa kabar? Saya baik-baik saja, terima kasih banyak."
    t = tok.encode(text)
    assert len(t) > 12
    # max_length 4: [P,t0,t1,t2] predicts t0..t3; then [t3..t6] predicts t4..t7; [t7..t10] t8..t11; …
    expected = _hand_ll(model, [QWEN_ENDOFTEXT] + t[:3], t[:4])[0]
    for start in range(4, len(t), 4):
        pred = t[start:start + 4]
        expected += _hand_ll(model, t[start + len(pred) - 5:start + len(pred) - 1], pred)[0]
    small = CausalLM(tiny_hf_model, ModelConfig(batch_size=2, max_length=4, device="cpu"))
    assert small.loglikelihood_rolling([text])[0] == pytest.approx(expected, abs=1e-3)
    assert small.count_tokens([text, ""]) == [len(t), 0]
    assert small.loglikelihood_rolling([""]) == [0.0]


def test_short_document_rolls_like_an_empty_context_request(lm):
    (ll, _), = lm.loglikelihood([("", "ສະບາຍດີ")])
    assert lm.loglikelihood_rolling(["ສະບາຍດີ"])[0] == pytest.approx(ll, abs=1e-5)


def test_generation_is_greedy_batched_and_cut_at_stop_strings(tiny_hf_model, lm):
    requests = [("Hello", {"max_gen_toks": 6}), ("ภาษาไทย", {"max_gen_toks": 6}), ("你好", {"max_gen_toks": 6}),
                ("Xin chào các bạn", {"max_gen_toks": 6})]
    single = CausalLM(tiny_hf_model, ModelConfig(batch_size=1, device="cpu"))
    free = lm.generate_until(requests)
    assert free == single.generate_until(requests)
    assert all(free)
    stop = free[0][len(free[0]) // 2:][:2]  # a piece of what it will generate
    cut, = lm.generate_until([("Hello", {"until": [stop], "max_gen_toks": 6})])
    assert cut == free[0][:free[0].index(stop)]
    assert cut_at_stop("abc\n\ndef", ["\n\n", "c"]) == "ab"


def test_bad_inputs_get_clear_errors(tmp_path, lm):
    with pytest.raises(InputError, match="no config.json"):
        CausalLM(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}', encoding="utf-8")
    with pytest.raises(InputError, match="holds no tokenizer"):
        CausalLM(tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        ModelConfig(batch_size=0)
    with pytest.raises(ValueError, match="no tokens"):
        lm.loglikelihood([("context", "")])
    with pytest.raises(ValueError, match="only greedy"):
        lm.generate_until([("x", {"temperature": 0.7})])
