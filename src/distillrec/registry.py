"""One registry pattern for everything chosen by name (models, distillation methods): a decorator registers a
class under its field name, lookups of unknown names list the known ones, and the package that defines the
classes is imported on first lookup so that ``get`` works without the caller importing it first."""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from distillrec.utils import DistillrecError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind  # "model", "distillation method": used in error messages
        self.package = package  # importing it runs every @register decorator
        self._entries: dict[str, T] = {}

    def register(self, name: str):
        """Class decorator: ``@REGISTRY.register("bpr")``; sets ``cls.name``. A second class under a taken name
        is an error (two modules claiming one name would otherwise shadow each other silently)."""

        def wrap(cls: T) -> T:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} registered twice")
            cls.name = name
            self._entries[name] = cls
            return cls

        return wrap

    def get(self, name: str) -> T:
        importlib.import_module(self.package)
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names())
            raise DistillrecError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        importlib.import_module(self.package)
        return sorted(self._entries)
