"""What `stockscale evaluate` runs and its defaults, without numpy or torch: `--help` reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from stockscale.config import TrainOverrides


@dataclass(frozen=True)
class EvaluateSettings:
    """K rolling origins x S seeds of one training configuration (`train`: TrainConfig overrides); what goes
    together is checked here, once, when the settings are made (SettingError naming the settings)."""

    origins: int = 5
    seeds: int = 3
    train: TrainOverrides = field(default_factory=lambda: TrainOverrides())
    parallel: int = 1  # runs at once
    threads_per_run: int | None = None
    timeout: float | None = None  # seconds per run

    def __post_init__(self) -> None:
        from stockscale.errors import SettingError

        if self.origins < 1 or self.seeds < 1:
            raise SettingError("an evaluation needs at least one {origins} and one {seeds}")
        if self.parallel < 1:
            raise SettingError(f"{{parallel}} must be at least 1, not {self.parallel}")
