"""Quality: per-language fastText classifiers (train), scores for every document, top-p% selection."""
