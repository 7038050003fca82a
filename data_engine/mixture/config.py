"""The `mixture:` section: what the sweep, the fit, the search and the plan are set to.

Each part's dataclass lives beside its code (sampler, fit, search, plan); this one only gathers
them, so one YAML section configures a whole mixture study. The proxy runs are trained by the
trainer, so their settings (`sweep:` inside this section) stay plain data here and are checked by
`trainer.sweep` — the data engine never imports the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_engine.errors import ConfigError
from data_engine.langs import LANGS
from data_engine.mixture.fit import FitConfig
from data_engine.mixture.plan import SAILOR2_STAGE1, PlanConfig
from data_engine.mixture.sample import SamplerConfig
from data_engine.mixture.search import Objective, SearchConfig


@dataclass(frozen=True)
class MixtureConfig:
    langs: tuple[str, ...] = SAILOR2_STAGE1
    """The languages mixed in stage 1: the proxies' mixture columns (Sailor2's nine by default)."""
    budget_stage1: int | None = None
    """Tokens planned for stage 1: the epoch caps of the sampled and searched mixtures (required
    by `mixture sweep`, here or as --budget-stage1)."""
    budget_stage2: int | None = None
    """Tokens planned for stage 2 (`plan`'s --budget-stage2 overrides)."""
    runs: int = 16
    """Proxy runs (mixtures sampled); RegMix: 512 for 17 domains, 128 already pick a top-2 mixture."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    sweep: dict[str, Any] = field(default_factory=dict)
    """Proxy settings for `trainer.sweep.SweepConfig`: preset (tiny | regmix), proxy overrides, workers, stage."""
    fit: FitConfig = field(default_factory=FitConfig)
    objective: Objective = field(default_factory=Objective)
    search: SearchConfig = field(default_factory=SearchConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def __post_init__(self) -> None:
        unknown = [x for x in self.langs if x not in LANGS]
        if unknown or not self.langs:
            raise ConfigError(f"mixture.langs: {unknown or 'empty'}; use codes of {', '.join(LANGS)}")
        for key in ("budget_stage1", "budget_stage2"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"mixture.{key} must be a positive number of tokens, got {value}")
        if self.runs < 2:
            raise ConfigError(f"mixture.runs must be at least 2, got {self.runs}")
