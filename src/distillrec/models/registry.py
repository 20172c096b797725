"""The model registry: ``@register_model("bpr")`` on a class makes it available by name everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillrec.utils import DistillrecError

if TYPE_CHECKING:
    from distillrec.models.base import Recommender

_MODELS: dict[str, type[Recommender]] = {}


def register_model(name: str):
    def wrap(cls: type[Recommender]) -> type[Recommender]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def get_model_class(name: str) -> type[Recommender]:
    import distillrec.models  # noqa: F401  (importing the package registers every model)

    try:
        return _MODELS[name]
    except KeyError:
        raise DistillrecError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}") from None


def list_models() -> list[str]:
    import distillrec.models  # noqa: F401

    return sorted(_MODELS)
