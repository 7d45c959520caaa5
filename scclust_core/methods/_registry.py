"""The one place where clustering methods are registered by name (timm-style)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    from ._base import ClusteringMethod

__all__ = ["register_method", "get_method", "list_methods"]

_REGISTRY: dict[str, type["ClusteringMethod"]] = {}
M = TypeVar("M", bound=type)


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: ``@register_method("cicl") class CICL(ClusteringMethod): ...``."""

    def deco(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"A method named {name!r} is already registered ({_REGISTRY[name].__name__})")
        if name != name.lower() or " " in name:
            raise ValueError(f"Method names are lowercase snake_case, got {name!r}")
        cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return deco


def get_method(name: str) -> "ClusteringMethod":
    """Instantiate the method registered as ``name``; unknown names list the known ones."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; registered methods: {sorted(_REGISTRY)}") from None


def list_methods() -> list[str]:
    """Registered method names in registration order (classic baselines first)."""
    return list(_REGISTRY)

