"""Recommenders usable as teacher or student. Importing this package registers them all."""

from distillrec.models import bpr, cml, lightgcn, neumf, nextitnet, pop, sasrec, vae  # noqa: F401
from distillrec.models.base import ModelConfig, Recommender
from distillrec.models.registry import get_model_class, list_models, register_model

__all__ = ["ModelConfig", "Recommender", "get_model_class", "list_models", "register_model"]
from distillrec.models import supernet  # noqa: F401  (AdaRec: registers "supernet" and "adarec")
