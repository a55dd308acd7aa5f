"""Model connectors behind one protocol (:class:`~openheim.models.base.Model`).

One file per provider; each is imported only when used:

- ``openai``: Chat Completions API and compatible servers (``base_url``).
- ``anthropic``: the Messages API.
- ``scripted``: :class:`ScriptedModel`, a deterministic test double.
- ``llama``: local GGUF models through llama.cpp.

Model strings: ``"openai:gpt-4o-mini"``, ``"anthropic:claude-sonnet-4-5"``,
``"llama:/path/model.gguf"``.
"""

from __future__ import annotations

from typing import Any

from openheim.models.base import (
    RAW_ARGUMENTS_KEY,
    Model,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)

__all__ = [
    "RAW_ARGUMENTS_KEY",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "ScriptedModel",
    "StreamEvent",
    "TextDelta",
    "ToolCallDelta",
    "ToolDefinition",
    "infer_model",
]

_PROVIDERS = {
    "openai": ("openheim.models.openai", "OpenAIModel"),
    "anthropic": ("openheim.models.anthropic", "AnthropicModel"),
    "llama": ("openheim.models.llama", "LlamaModel"),
}


def infer_model(model: str | Model, **options: Any) -> Model:
    """A :class:`Model` from a ``"provider:name"`` string (or the model itself)."""
    from openheim.errors import ConfigError

    if not isinstance(model, str):
        if not isinstance(model, Model):
            raise ConfigError(
                f"model must be a 'provider:name' string or a Model, got {type(model).__name__}"
            )
        return model
    provider, sep, name = model.partition(":")
    if not sep or not name or provider not in _PROVIDERS:
        raise ConfigError(
            f"unknown model {model!r}: use 'openai:<model>', 'anthropic:<model>' or "
            "'llama:/path/to/model.gguf', or pass a Model instance"
        )
    import importlib

    module_name, cls_name = _PROVIDERS[provider]
    cls = getattr(importlib.import_module(module_name), cls_name)
    result: Model = cls(name, **options)
    return result


def __getattr__(name: str) -> Any:
    if name == "ScriptedModel":
        from openheim.models.scripted import ScriptedModel

        return ScriptedModel
    raise AttributeError(f"module 'openheim.models' has no attribute {name!r}")
