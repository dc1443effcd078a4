"""One registry pattern for every pluggable part (models, losses, datasets, writers...).

A registry is a plain dict from name to a builder, filled by a decorator in the
module that defines the part. Adding a part means writing it and decorating it.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterator, TypeVar

from seglab.errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def add(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return add

    def get(self, name: str, where: str = "") -> Callable:
        """The builder for `name`; an unknown name is a ConfigError suggesting the closest one."""
        return self._items[self.key(name, where)]

    def key(self, name: str, where: str = "") -> str:
        """The registered spelling of `name` (case does not matter); an unknown name is a
        ConfigError suggesting the closest one."""
        if name in self._items:
            return name
        lowered = {k.lower(): k for k in self._items}
        if name.lower() in lowered:
            return lowered[name.lower()]
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})"
        )

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
