"""The two-stage training plan: which tokens each Sailor2 stage trains on, and how often.

Stage 1 is the searched mixture over the stage-1 languages, on the curated table. Stage 2 anneals
on `replay_fraction` of its budget replayed from stage-1 data in stage-1 proportions, plus
high-quality tokens — a stricter top-q% of each language by quality score — over every language:
the stage-1 (high-resource) languages keep their stage-1 proportions among themselves, the others
(low-resource) take what their high-quality tokens allow under the epoch cap (Sailor2 added jav,
sun, ceb, war, ilo and lao only here).

Every number comes from the lake's `token_counts` (exact tokens as the exporter writes them), and
the plan records the table versions and counts it used, so `export_shards --plan` can write exactly
those shards and a reader can check where a weight came from. Each blend entry states its epochs:
`weight × budget / tokens_available` (replay: both stages' passes over the same data); an entry at
its cap is said in `warnings`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from data_engine.digests import file_digest
from data_engine.errors import ConfigError
from data_engine.langs import LANGS
from data_engine.tables import DOCS_CURATED, DOCS_SCORED

#: Sailor2's stage-1 languages (RegMix optimised the sum of their validation losses).
SAILOR2_STAGE1: tuple[str, ...] = ("vie", "ind", "tha", "eng", "zho", "mya", "zsm", "tgl", "khm")
BASE_GROUP = "stage1"
HQ_GROUP = "stage2-hq"
_EPS = 1e-9


@dataclass(frozen=True)
class PlanConfig:
    """The `plan:` section (under `mixture:`)."""

    replay_fraction: float = 0.2
    """Share of stage 2 replayed from stage-1 data (Sailor2: 20%)."""
    hq_percent: float = 10.0
    """Stage 2's high-quality selection: the top q% of each language by quality score."""
    hq_percent_by_lang: dict[str, float] = field(default_factory=dict)
    max_epochs: float = 4.0
    """No entry may pass over its tokens more often (replay counts stage 1's passes too)."""
    base_table: str = DOCS_CURATED
    hq_table: str = DOCS_SCORED

    def __post_init__(self) -> None:
        problems = []
        unknown = [x for x in self.hq_percent_by_lang if x not in LANGS]
        if unknown:
            problems.append(f"hq_percent_by_lang: unknown language codes {unknown} (known: {', '.join(LANGS)})")
        if not 0 <= self.replay_fraction < 1:
            problems.append(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        for lang, q in {"default": self.hq_percent, **self.hq_percent_by_lang}.items():
            if not 0 < q <= 100:
                problems.append(f"hq percent of {lang} must be in (0, 100], got {q}")
        if not self.max_epochs > 0:
            problems.append(f"max_epochs must be positive, got {self.max_epochs}")
        if problems:
            raise ConfigError("mixture.plan: " + "; ".join(problems))

    def hq(self, lang: str) -> float:
        return self.hq_percent_by_lang.get(lang, self.hq_percent)


def plan_digest(doc: Mapping[str, Any]) -> str:
    """sha256 of the plan's canonical JSON, without its own digest: names exactly what it asks for."""
    body = {k: v for k, v in doc.items() if k != "plan_digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def make_plan(lake: str, mixture: Mapping[str, float], budget_stage1: int, budget_stage2: int,
              cfg: PlanConfig = PlanConfig(), *, stage1_langs: tuple[str, ...] = SAILOR2_STAGE1,
              base_version: int | None = None,
              hq_version: int | None = None, mixture_path: str | Path | None = None) -> dict[str, Any]:
    """The plan as plain data (what `plan.yaml` holds), its digest included.

    Args:
        mixture: stage-1 weights per language (the search's `mixture.yaml`); languages outside
            `stage1_langs` (`mixture.langs`) or without tokens in the base table are an error.
        base_version, hq_version: versions of the base and high-quality tables whose token counts
            to use (None: the newest counted).

    Raises:
        ConfigError: a budget that is not positive; a mixture over other languages; a stage that
            cannot be filled under `max_epochs` (the message says with how many tokens it could).
    """
    from data_engine.tokens import read_token_counts

    if budget_stage1 <= 0 or budget_stage2 <= 0:
        raise ConfigError(f"budgets must be positive token counts, got stage 1 {budget_stage1}, "
                          f"stage 2 {budget_stage2}")
    base = read_token_counts(lake, cfg.base_table, base_version)
    hq_counts = read_token_counts(lake, cfg.hq_table, hq_version)
    if (base.tokenizer_digest, base.eod_id) != (hq_counts.tokenizer_digest, hq_counts.eod_id):
        raise ConfigError(f"token counts of {cfg.base_table} v{base.version} and {cfg.hq_table} "
                          f"v{hq_counts.version} used different tokenizers; count both with the training one")
    warnings: list[str] = []
    w1 = _stage1_weights(mixture, base.tokens(), stage1_langs, cfg, budget_stage1, warnings)
    base_tokens = {lang: base.tokens()[lang] for lang in w1}
    stage1 = [_entry(lang, "base", BASE_GROUP, w, base_tokens[lang], w * budget_stage1 / base_tokens[lang])
              for lang, w in w1.items() if w > 0]

    replay = _replay_weights(w1, base_tokens, budget_stage1, budget_stage2, cfg, warnings)
    hq_tokens, hq_percent = _hq_tokens(hq_counts, cfg, warnings)
    hq = _hq_weights(w1, hq_tokens, budget_stage2, cfg, warnings)
    stage2 = []
    for lang, w in replay.items():
        if w > 0:
            total = (w1[lang] * budget_stage1 + w * budget_stage2) / base_tokens[lang]
            stage2.append(_entry(lang, "replay", BASE_GROUP, w, base_tokens[lang],
                                 w * budget_stage2 / base_tokens[lang], epochs_total=total))
    for lang, w in hq.items():
        if w > 0:
            stage2.append(_entry(lang, "hq", HQ_GROUP, w, hq_tokens[lang], w * budget_stage2 / hq_tokens[lang],
                                 hq_percent=hq_percent[lang]))
    for blend in (stage1, stage2):
        _renormalise(blend)
    stage1.sort(key=lambda e: e["lang"])
    stage2.sort(key=lambda e: (e["kind"], e["lang"]))
    for e in stage1 + stage2:
        if e.get("epochs_total", e["epochs"]) > cfg.max_epochs * (1 - 1e-6):
            why = (" (a low-resource language takes all its cap allows)"
                   if e["kind"] == "hq" and e["lang"] not in w1 else "")
            warnings.append(f"{e['kind']} {e['lang']}: at the cap of {cfg.max_epochs:g} epochs "
                            f"({e['tokens_available']:,} tokens available){why}")
    hq_langs = sorted(e["lang"] for e in stage2 if e["kind"] == "hq")
    doc: dict[str, Any] = {
        "lake": str(lake),
        "tokenizer": base.tokenizer,
        "tokenizer_digest": base.tokenizer_digest,
        "mixture": ({"path": str(Path(mixture_path).resolve()), "digest": file_digest(mixture_path)}
                    if mixture_path else None),
        "shards": {
            BASE_GROUP: {"table": base.table, "version": base.version,
                         "langs": sorted({e["lang"] for e in stage1 + stage2 if e["kind"] != "hq"}),
                         "top_percent": None},
            HQ_GROUP: {"table": hq_counts.table, "version": hq_counts.version, "langs": hq_langs,
                       "top_percent": {lang: hq_percent[lang] for lang in hq_langs}},
        },
        "stages": {
            "stage1": {"budget_tokens": int(budget_stage1), "blend": stage1},
            "stage2": {"budget_tokens": int(budget_stage2), "replay_fraction": cfg.replay_fraction, "blend": stage2},
        },
        "token_counts": {
            base.table: {"version": base.version, "counts_version": base.counts_version,
                         "tokens": dict(sorted(base.tokens().items()))},
            hq_counts.table: {"version": hq_counts.version, "counts_version": hq_counts.counts_version,
                              "tokens": dict(sorted(hq_counts.tokens().items())),
                              "hq_tokens": dict(sorted(hq_tokens.items()))},
        },
        "config": {"stage1_langs": list(stage1_langs), "replay_fraction": cfg.replay_fraction,
                   "hq_percent": cfg.hq_percent, "hq_percent_by_lang": dict(sorted(cfg.hq_percent_by_lang.items())),
                   "max_epochs": cfg.max_epochs},
        "warnings": warnings,
    }
    doc["plan_digest"] = plan_digest(doc)
    return doc


def write_plan(doc: Mapping[str, Any], path: str | Path) -> Path:
    """plan.yaml, replaced atomically; the digest first so a reader sees it at the top."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {"plan_digest": doc["plan_digest"], **{k: v for k, v in doc.items() if k != "plan_digest"}}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path


def _entry(lang: str, kind: str, group: str, weight: float, tokens: int, epochs: float, **extra: Any) -> dict[str, Any]:
    entry = {"lang": lang, "kind": kind, "prefix": f"{group}/{lang}", "weight": float(weight),
             "tokens_available": int(tokens), "epochs": round(float(epochs), 6)}
    return entry | {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in extra.items()}


def _renormalise(blend: list[dict[str, Any]]) -> None:
    """Weights rounded to 12 digits summing to 1 (the last entry absorbs the rounding)."""
    total = sum(e["weight"] for e in blend)
    for e in blend:
        e["weight"] = round(e["weight"] / total, 12)
    if blend:
        blend[-1]["weight"] = round(1.0 - sum(e["weight"] for e in blend[:-1]), 12)


def _stage1_weights(mixture: Mapping[str, float], tokens: Mapping[str, int], stage1_langs: tuple[str, ...],
                    cfg: PlanConfig, budget: int, warnings: list[str]) -> dict[str, float]:
    outside = sorted(set(mixture) - set(stage1_langs))
    if outside:
        raise ConfigError(f"the mixture weights {outside}, which are not stage-1 languages "
                          f"({', '.join(stage1_langs)}); set mixture.langs")
    missing = sorted(lang for lang, w in mixture.items() if w > 0 and tokens.get(lang, 0) <= 0)
    if missing:
        raise ConfigError(f"the mixture weights {missing}, which have no tokens in the base table")
    if any(w < 0 for w in mixture.values()) or sum(mixture.values()) <= 0:
        raise ConfigError(f"mixture weights must be non-negative and not all 0, got {dict(mixture)}")
    langs = sorted(lang for lang in mixture if tokens.get(lang, 0) > 0)
    w = np.array([mixture[lang] for lang in langs], dtype=float)
    w /= w.sum()
    caps = np.array([min(1.0, cfg.max_epochs * tokens[lang] / budget) for lang in langs])
    if caps.sum() < 1 - 1e-12:
        raise ConfigError(f"stage 1: a budget of {budget:,} tokens needs more than {cfg.max_epochs:g} epochs of "
                          f"the {sum(tokens[x] for x in langs):,} tokens of {', '.join(langs)}; the most it can be "
                          f"is {int(cfg.max_epochs * sum(tokens[x] for x in langs)):,}")
    if (w > caps + _EPS).any():
        over = [lang for lang, x, c in zip(langs, w, caps, strict=True) if x > c + _EPS]
        warnings.append(f"stage 1: the mixture asks more than {cfg.max_epochs:g} epochs of {', '.join(over)} at "
                        f"this budget; their weights were lowered to the cap and the rest shared out")
        w = _fill(w, caps)
    return dict(zip(langs, w.tolist(), strict=True))


def _replay_weights(w1: Mapping[str, float], tokens: Mapping[str, int], budget1: int, budget2: int,
                    cfg: PlanConfig, warnings: list[str]) -> dict[str, float]:
    """Stage-2 weights of the replayed stage-1 data: `replay_fraction` in stage-1 proportions, each
    language's passes over its data in both stages together within the cap."""
    r = cfg.replay_fraction
    if r == 0:
        return {}
    langs = [lang for lang in sorted(w1) if w1[lang] > 0]
    share = np.array([w1[lang] for lang in langs])
    share /= share.sum()
    room = np.array([max(0.0, cfg.max_epochs * tokens[lang] - w1[lang] * budget1) / (r * budget2) for lang in langs])
    if room.sum() < 1 - 1e-9:
        raise ConfigError(f"stage 2: replaying {r:.0%} of {budget2:,} tokens from stage-1 data would pass over "
                          f"it more than {cfg.max_epochs:g} times in both stages; lower replay_fraction or the "
                          "stage-2 budget")
    if (share > room + _EPS).any():
        over = [lang for lang, x, c in zip(langs, share, room, strict=True) if x > c + _EPS]
        warnings.append(f"stage 2 replay: {', '.join(over)} would exceed {cfg.max_epochs:g} epochs over both "
                        "stages; lowered to the cap, the others replay more")
        share = _fill(share, np.minimum(room, 1.0))
    return {lang: r * s for lang, s in zip(langs, share.tolist(), strict=True)}


def _hq_tokens(counts: Any, cfg: PlanConfig, warnings: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    tokens, percent = {}, {}
    for lang in sorted(counts.totals):
        if lang not in LANGS:
            continue
        if lang not in counts.bands:
            warnings.append(f"{lang}: no quality scores in {counts.table} v{counts.version}; "
                            "left out of stage 2's high-quality part")
            continue
        top = counts.top_tokens(lang, cfg.hq(lang))
        if top.tokens > 0:
            tokens[lang], percent[lang] = top.tokens, cfg.hq(lang)
    return tokens, percent


def _hq_weights(w1: Mapping[str, float], hq_tokens: Mapping[str, int], budget2: int, cfg: PlanConfig,
                warnings: list[str]) -> dict[str, float]:
    """Stage-2 weights of the high-quality part: low-resource languages at what their tokens allow
    under the cap, the stage-1 languages sharing the rest in their stage-1 proportions."""
    part = 1.0 - cfg.replay_fraction
    low = {lang: min(part, cfg.max_epochs * n / budget2) for lang, n in hq_tokens.items() if lang not in w1}
    high = [lang for lang in sorted(w1) if w1[lang] > 0 and lang in hq_tokens]
    if sum(low.values()) > part:
        scale = part / sum(low.values())
        warnings.append(f"stage 2: the low-resource languages' high-quality tokens at {cfg.max_epochs:g} epochs "
                        f"exceed the high-quality part; scaled by {scale:.3f}, none left for stage-1 languages")
        low = {lang: w * scale for lang, w in low.items()}
    rest = part - sum(low.values())
    weights = dict(low)
    if rest > _EPS:
        if not high:
            raise ConfigError("stage 2: no stage-1 language has high-quality tokens to fill "
                              f"{rest:.1%} of the stage; lower the stage-2 budget or raise hq_percent")
        share = np.array([w1[lang] for lang in high])
        share /= share.sum()
        caps = np.array([cfg.max_epochs * hq_tokens[lang] / (budget2 * rest) for lang in high])
        if caps.sum() < 1 - 1e-9:
            most = int(sum(low.values()) * budget2 / part + cfg.max_epochs * sum(hq_tokens[x] for x in high) / part)
            raise ConfigError(f"stage 2: {budget2:,} tokens need more high-quality tokens than the top "
                              f"{cfg.hq_percent:g}% hold at {cfg.max_epochs:g} epochs; the most this plan can "
                              f"fill is about {most:,} tokens; lower the budget or raise hq_percent")
        if (share > caps + _EPS).any():
            over = [lang for lang, x, c in zip(high, share, caps, strict=True) if x > c + _EPS]
            warnings.append(f"stage 2 high-quality: {', '.join(over)} capped at {cfg.max_epochs:g} epochs; "
                            "the other stage-1 languages take their share")
            share = _fill(share, np.minimum(caps, 1.0))
        weights.update({lang: rest * s for lang, s in zip(high, share.tolist(), strict=True)})
    return weights


def _fill(w: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """The mixture closest in proportions to `w` within the caps: languages over their cap are fixed
    at it, the others scaled up together to fill the rest, repeated until none is over (exact)."""
    w = np.asarray(w, dtype=float) / np.sum(w)
    fixed = np.zeros(len(w), dtype=bool)
    for _ in range(len(w) + 1):
        free_total = w[~fixed].sum()
        out = np.where(fixed, caps, w * (1 - caps[fixed].sum()) / free_total if free_total > 0 else 0.0)
        over = (~fixed) & (out > caps + _EPS)
        if not over.any():
            return out
        fixed |= over
    return out
