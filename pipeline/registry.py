"""Plugin registries: detectors, embedders and sinks register themselves by name."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str):
        def deco(factory):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = factory
            return factory
        return deco

    def create(self, name: str, *args, **kwargs) -> T:
        try:
            factory = self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None
        return factory(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)
