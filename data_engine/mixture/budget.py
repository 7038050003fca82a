"""Token budgets as people write them on a command line: `400e9`, `400B`, `1.5T`."""

from __future__ import annotations

_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_tokens(text: str) -> int:
    """A token budget as users write it: `400000000000`, `400e9`, `400B`, `1.5T`, `20M` (argparse type)."""
    import argparse
    from decimal import Decimal, InvalidOperation

    raw = str(text).strip().replace("_", "").replace(",", "")
    scale = _SUFFIX.get(raw[-1:].lower(), 1) if raw else 1
    number = raw[:-1] if scale != 1 else raw
    try:
        value = Decimal(number) * scale
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 400000000, 400e6, 400M, 1.5T)") from None
    if value <= 0 or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"a token count must be a positive whole number, got {text!r}")
    return int(value)
