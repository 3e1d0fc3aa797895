"""One small registry type shared by models, algorithms, datasets and detectors (timm style)."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a factory. ``register("x")`` is a decorator; ``get`` names the known
    entries when a name is unknown, so a typo is an error a user can act on. Keyword arguments
    of ``register`` are facts about the entry that callers look up with ``info`` (timm keeps
    such facts, e.g. which models have weights, beside its registry the same way)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str, **info) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._info[name] = info
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def info(self, name: str) -> dict:
        """The facts ``name`` was registered with (empty when none)."""
        self.get(name)  # an unknown name raises, naming the known ones
        return dict(self._info[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
