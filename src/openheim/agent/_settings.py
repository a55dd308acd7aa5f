"""``RunSettings``: the limits and options one run executes with, fixed when it starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from openheim.errors import ConfigError
from openheim.models.base import ModelSettings

__all__ = ["RunSettings", "as_model_settings"]


def as_model_settings(value: ModelSettings | Mapping[str, Any] | None) -> ModelSettings:
    """``value`` as :class:`ModelSettings` (ConfigError naming what is wrong)."""
    if value is None:
        return ModelSettings()
    if isinstance(value, ModelSettings):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - set(ModelSettings.__struct_fields__)
        if unknown:
            raise ConfigError(
                f"unknown model settings {sorted(unknown)}; the settings are "
                f"{', '.join(ModelSettings.__struct_fields__)}"
            )
        try:
            return msgspec.convert(dict(value), ModelSettings)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid model settings: {exc}") from None
    raise ConfigError(
        f"model_settings must be a ModelSettings or a dict, got {type(value).__name__}"
    )


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds or None, got {value!r}")


class RunSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The settings of one run: the agent's, with the run's own overrides applied.

    ``agent`` names the agent (it appears in errors and records);
    ``max_iterations`` model requests per run; ``tool_concurrency`` tool
    calls in flight per turn; ``model_timeout`` / ``tool_timeout`` (per call)
    and ``run_timeout`` in seconds or None; ``output_retries`` invalid final
    answers sent back to the model; ``model_settings`` the sampling
    settings; ``streaming`` whether the model is asked to stream.
    Validated when made (ConfigError); frozen, so a run never sees it change.
    """

    agent: str = "agent"
    max_iterations: int = 20
    tool_concurrency: int = 8
    model_timeout: float | None = None
    tool_timeout: float | None = None
    run_timeout: float | None = None
    output_retries: int = 2
    model_settings: ModelSettings = msgspec.field(default_factory=ModelSettings)
    streaming: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.agent, str):
            raise ConfigError(f"an agent's name is a string, got {type(self.agent).__name__}")
        if self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {self.max_iterations!r}")
        if self.tool_concurrency < 1:
            raise ConfigError(f"tool_concurrency must be >= 1, got {self.tool_concurrency!r}")
        if self.output_retries < 0:
            raise ConfigError(f"output_retries must be >= 0, got {self.output_retries!r}")
        _positive("model_timeout", self.model_timeout)
        _positive("tool_timeout", self.tool_timeout)
        _positive("run_timeout", self.run_timeout)
