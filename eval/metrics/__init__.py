"""Scorers that turn model outputs into task metrics (lm-evaluation-harness definitions)."""

from eval.metrics.choice import choice_scores
from eval.metrics.corpus import CorpusTotals, corpus_metrics, corpus_totals
from eval.metrics.normalise import aggregate, normalised
from eval.metrics.qa import exact_match, f1, normalize_answer
from eval.metrics.translation import bleu, chrf_pp

__all__ = ["CorpusTotals", "aggregate", "bleu", "choice_scores", "chrf_pp", "corpus_metrics", "corpus_totals",
           "exact_match", "f1", "normalised", "normalize_answer"]
