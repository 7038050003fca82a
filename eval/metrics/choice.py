"""Multiple-choice accuracy from per-choice log-likelihoods, as lm-evaluation-harness defines it.

lm-eval (`ConfigurableTask.process_results`, 0.4.13) picks `argmax(lls)` for `acc`, and for
`acc_norm` divides each log-likelihood by the choice's length in *characters* (Python `len`, the
choice text without the target delimiter) — not bytes, whatever its docs and paper say (issue
#3278). `acc_bytes` (added in PR #3368) divides by UTF-8 bytes. The two differ for Thai or
Vietnamese choices beside Latin ones, where one character is up to three bytes, so both are
reported. Ties go to the first choice, as numpy's argmax does.
"""

from __future__ import annotations

from collections.abc import Sequence


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def choice_scores(lls: Sequence[float], choices: Sequence[str], gold: int, *,
                  unconditional: Sequence[float] | None = None) -> dict[str, float]:
    """`acc`, `acc_norm`, `acc_bytes` (each 0.0 or 1.0) for one item.

    Args:
        lls: log p(delimiter + choice | context) per choice.
        choices: the choice strings, without the delimiter (their lengths normalise).
        gold: index of the correct choice.
        unconditional: log p(delimiter + choice | "") per choice; when given, `acc_mutual_info`
            (argmax of conditional minus unconditional) is added.
    """
    if len(lls) != len(choices) or not choices:
        raise ValueError(f"choice_scores needs one log-likelihood per choice, got {len(lls)} for "
                         f"{len(choices)} choices")
    if not 0 <= gold < len(choices):
        raise ValueError(f"gold index {gold} is outside the {len(choices)} choices")
    empty = [i for i, c in enumerate(choices) if len(c) == 0]
    if empty:
        raise ValueError(f"choice {empty[0]} is empty: acc_norm cannot divide by its length")
    scores = {
        "acc": float(_argmax(lls) == gold),
        "acc_norm": float(_argmax([ll / len(c) for ll, c in zip(lls, choices, strict=True)]) == gold),
        "acc_bytes": float(_argmax([ll / len(c.encode("utf-8")) for ll, c in zip(lls, choices, strict=True)])
                           == gold),
    }
    if unconditional is not None:
        if len(unconditional) != len(choices):
            raise ValueError(f"unconditional has {len(unconditional)} values for {len(choices)} choices")
        scores["acc_mutual_info"] = float(
            _argmax([c - u for c, u in zip(lls, unconditional, strict=True)]) == gold)
    return scores
