"""Our CausalLM and scorers against lm-evaluation-harness's own HFLM and task machinery.

The same tiny random Qwen2 directory is scored both ways on multiple-choice items in four
languages (one context ending in a space, one empty, one longer than max_length) and on corpus
documents (one long enough for several rolling windows); log-likelihoods must agree to 1e-6 in
float32, and acc/acc_norm/acc_bytes and bits-per-byte must be identical. lm-eval's
`simple_evaluate` runs offline on local JSON files, so its end-to-end numbers are compared too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.metrics import choice_scores, corpus_metrics, corpus_totals
from eval.model import CausalLM, ModelConfig, rolling_windows

MAX_LENGTH = 24
BATCH = 4

ITEMS = [  # (lang, context, choices, gold)
    ("eng", "Question: What is the capital of Thailand?\nAnswer:", ["Bangkok", "Hanoi", "Jakarta"], 0),
    ("tha", "คำถาม: เมืองหลวงของประเทศไทยคือ ", ["กรุงเทพมหานคร", "Hanoi"], 0),  # trailing space
    ("vie", "Câu hỏi: Thủ đô của Việt Nam là gì?\nTrả lời:", ["Hà Nội", "Thành phố Hồ Chí Minh", "Huế"], 0),
    ("zho", "问题：中国的首都是哪里？\n答案：", ["北京", "上海", "Guangzhou"], 0),
    ("eng", "", ["The sky is blue.", "Sky the blue is."], 0),  # empty context
    ("tha", "ภาษาไทยเป็นภาษาที่สวยงามมาก และมีประวัติศาสตร์ยาวนาน ผู้คนหลายล้านคนพูดภาษานี้ทุกวัน คำถาม: ภาษานี้คือ",
     ["ภาษาไทย", "ภาษาลาว"], 0),  # longer than max_length: cut from the left
]

DOCS = [  # (lang, text)
    ("eng", "The quick brown fox jumps over the lazy dog."),
    ("tha", "ภาษาไทยเป็นภาษาที่สวยงามมาก และมีประวัติศาสตร์ยาวนาน " * 4),  # several rolling windows
    ("vie", "Tiếng Việt là ngôn ngữ chính thức của Việt Nam."),
    ("zho", "中文是世界上使用人数最多的语言之一。"),
    ("ind", "Bahasa Indonesia adalah bahasa resmi Republik Indonesia."),
]


def _requests() -> list[tuple[str, str]]:
    return [(ctx, " " + choice) for _, ctx, choices, _ in ITEMS for choice in choices]


@pytest.fixture(scope="module")
def ours(tiny_hf_model: Path) -> CausalLM:
    return CausalLM(tiny_hf_model, ModelConfig(batch_size=BATCH, max_length=MAX_LENGTH, device="cpu"))


@pytest.fixture(scope="module")
def hflm(tiny_hf_model: Path):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_hf_model), batch_size=BATCH, device="cpu", max_length=MAX_LENGTH)


def _instances(kind: str, args: list[tuple]) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def test_rolling_windows_equal_lm_eval_utils():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    for max_length in (1, 2, 5, 24):
        for n in range(0, 60, 7):
            tokens = list(range(100, 100 + n))
            theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=7, max_seq_len=max_length, context_len=1)]
            assert rolling_windows(tokens, 7, max_length) == theirs, (max_length, n)


def test_multiple_choice_loglikelihoods_and_accuracies_agree(ours, hflm):
    requests = _requests()
    long_ctx, long_cont = ours.encode_pair(*requests[-1])
    assert len(long_ctx) + len(long_cont) > MAX_LENGTH + 1  # the last item really is cut
    mine = ours.loglikelihood(requests)
    theirs = hflm.loglikelihood(_instances("loglikelihood", requests), disable_tqdm=True)
    for req, (a, ga), (b, gb) in zip(requests, mine, theirs, strict=True):
        assert _close(a, b), (req, a, b)
        assert ga == gb, req
    start = 0
    for _, _, choices, gold in ITEMS:
        lls_a = [ll for ll, _ in mine[start:start + len(choices)]]
        lls_b = [ll for ll, _ in theirs[start:start + len(choices)]]
        start += len(choices)
        assert choice_scores(lls_a, choices, gold) == choice_scores(lls_b, choices, gold)


def test_rolling_loglikelihoods_and_bits_per_byte_agree(ours, hflm):
    texts = [t for _, t in DOCS]
    assert len(ours.tok_encode(texts[1])) > 3 * MAX_LENGTH  # several windows
    mine = ours.loglikelihood_rolling(texts)
    theirs = hflm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]),
                                        disable_tqdm=True)
    for text, a, b in zip(texts, mine, theirs, strict=True):
        assert _close(a, b), (text[:20], a, b)
    counts = ours.count_tokens(texts)
    assert counts == [len(hflm.tok_encode(t)) for t in texts]
    for lang, text in DOCS:
        i = texts.index(text)
        m_a = corpus_metrics(corpus_totals([mine[i]], [text], [counts[i]], lang=lang))
        m_b = corpus_metrics(corpus_totals([theirs[i]], [text], [counts[i]], lang=lang))
        assert m_a["bits_per_byte"] == pytest.approx(m_b["bits_per_byte"], rel=1e-6)
    # lm-eval's own aggregation: bits_per_byte = -Σll / Σbytes / ln 2
    from lm_eval.api.metrics import bits_per_byte

    pooled = corpus_metrics(corpus_totals(mine, texts, counts, lang="eng"))
    assert pooled["bits_per_byte"] == pytest.approx(
        bits_per_byte([(ll, len(t.encode("utf-8"))) for ll, t in zip(theirs, texts, strict=True)]), rel=1e-6)


def test_greedy_generations_agree(ours, hflm):
    requests = [("Question: What is the capital of Thailand?\nAnswer:", {"until": ["\n"], "max_gen_toks": 5}),
                ("ภาษาไทย", {"until": ["\n"], "max_gen_toks": 5}),
                ("你好", {"until": ["\n", "。"], "max_gen_toks": 5}),
                ("Xin chào", {"until": ["\n"], "max_gen_toks": 5}),
                ("Hello", {"until": ["\n"], "max_gen_toks": 3})]
    theirs = hflm.generate_until(_instances("generate_until", requests), disable_tqdm=True)
    assert ours.generate_until(requests) == theirs


def test_simple_evaluate_on_local_json_agrees(tmp_path, ours, hflm, monkeypatch):
    """lm-eval end to end (task YAML, local JSON, its request building and aggregation)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"context": c, "choices": ch, "gold": g}, ensure_ascii=False) + "\n"
                             for _, c, ch, g in ITEMS if c), encoding="utf-8")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for _, t in DOCS), encoding="utf-8")
    cache = tmp_path / "hf-cache"
    for name, path, body in [
        ("sy_mc", items, 'output_type: multiple_choice\ndoc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
                         "doc_to_target: gold\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n"
                         "  - metric: acc_bytes\n"),
        ("sy_ppl", docs, 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
                         "metric_list:\n  - metric: bits_per_byte\n  - metric: byte_perplexity\n"
                         "  - metric: word_perplexity\n"),
    ]:
        (tmp_path / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\n"
            f"  cache_dir: {cache}\ntest_split: test\n{body}", encoding="utf-8")
    out = simple_evaluate(model=hflm, tasks=["sy_mc", "sy_ppl"], bootstrap_iters=0, log_samples=True,
                          task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    results = out["results"]

    mc = [(c, ch, g) for _, c, ch, g in ITEMS if c]
    requests = [(c, " " + choice) for c, ch, _ in mc for choice in ch]
    lm_eval_requests = [tuple(a) for s in out["samples"]["sy_mc"] for a in s["arguments"]]
    assert sorted(lm_eval_requests) == sorted(requests)  # we build the same requests
    lls = [ll for ll, _ in ours.loglikelihood(requests)]
    scores, start = [], 0
    for _, choices, gold in mc:
        scores.append(choice_scores(lls[start:start + len(choices)], choices, gold))
        start += len(choices)
    for metric in ("acc", "acc_norm", "acc_bytes"):
        assert sum(s[metric] for s in scores) / len(scores) == pytest.approx(results["sy_mc"][f"{metric},none"])

    texts = [t for _, t in DOCS]
    m = corpus_metrics(corpus_totals(ours.loglikelihood_rolling(texts), texts, ours.count_tokens(texts),
                                     lang="eng"))
    assert m["bits_per_byte"] == pytest.approx(results["sy_ppl"]["bits_per_byte,none"], rel=1e-6)
    assert m["byte_perplexity"] == pytest.approx(results["sy_ppl"]["byte_perplexity,none"], rel=1e-6)
    assert m["word_perplexity"] == pytest.approx(results["sy_ppl"]["word_perplexity,none"], rel=1e-6)
