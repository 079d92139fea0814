"""A lazy plugin registry: names map to "module:attribute" strings, imported only when first used."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from semcom.errors import InvalidInput

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps plugin names to import paths; `load(name)` imports the module on first use only."""

    def __init__(self, kind: str, entries: dict[str, str] | None = None, entry_point_group: str = "") -> None:
        self.kind = kind
        self._paths: dict[str, str] = dict(entries or {})
        self._loaded: dict[str, T] = {}
        if entry_point_group:
            for ep in entry_points(group=entry_point_group):
                self._paths.setdefault(ep.name, ep.value)

    def register(self, name: str, target: str | T) -> None:
        """Add a plugin by import path ("pkg.mod:Class") or by the object itself."""
        if isinstance(target, str):
            self._paths[name] = target
            self._loaded.pop(name, None)
        else:
            self._paths[name] = f"<object {target!r}>"
            self._loaded[name] = target

    def names(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def load(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        path = self._paths.get(name)
        if path is None:
            raise InvalidInput(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}")
        module_name, _, attr = path.partition(":")
        module = importlib.import_module(module_name)
        obj: T = getattr(module, attr)
        self._loaded[name] = obj
        return obj
