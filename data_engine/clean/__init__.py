"""Cleaning: Unicode/whitespace normalisation, heuristic rules per language, language identification."""
