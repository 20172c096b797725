"""The model registry: ``@register_model("bpr")`` on a class makes it available by name everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillrec.registry import Registry

if TYPE_CHECKING:
    from distillrec.models.base import Recommender

MODELS: Registry[type[Recommender]] = Registry("model", "distillrec.models")
register_model = MODELS.register


def get_model_class(name: str) -> type[Recommender]:
    return MODELS.get(name)


def list_models() -> list[str]:
    return MODELS.names()
