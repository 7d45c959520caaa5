"""Method configuration: dataclasses whose fields carry default, range and help.

The UI renders its hyperparameter forms from this metadata, the CLI parses ``--set key=value`` with it
and run records store ``to_dict()``. A method declares its config as a subclass of :class:`MethodConfig`
with every field made by :func:`param`, plus named presets (``paper`` = the published settings, ``cpu`` =
an adaptation for small machines, labelled as such).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Self

__all__ = ["param", "MethodConfig", "FieldSpec"]


def param(
    default: Any,
    *,
    help: str,
    min: float | None = None,
    max: float | None = None,
    choices: tuple | None = None,
    advanced: bool = False,
    label: str | None = None,
) -> Any:
    """Declare a config field with the metadata the form builder and validator need."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "advanced": advanced, "label": label}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """What a UI needs to draw one widget for a config field."""

    name: str
    kind: str  # "int" | "float" | "bool" | "str" | "choice" | "int_list"
    default: Any
    optional: bool
    help: str
    min: float | None
    max: float | None
    choices: tuple | None
    advanced: bool
    label: str


def _kind_of(tp: Any) -> tuple[str, bool]:
    """Map a resolved type hint to (kind, optional)."""
    optional = False
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) < len(args)
        if len(non_none) == 1:
            tp = non_none[0]
        elif all(a in (int, str) for a in non_none) or all(a in (int, float, str) for a in non_none):
            return "str", optional  # e.g. ``int | str`` such as n_hvg = 500 | "auto"
        else:
            tp = non_none[0]
        origin = typing.get_origin(tp)
    if tp is bool:
        return "bool", optional
    if tp is int:
        return "int", optional
    if tp is float:
        return "float", optional
    if tp is str:
        return "str", optional
    if origin in (list, tuple) or tp in (list, tuple):
        return "int_list", optional
    return "str", optional


@dataclass
class MethodConfig:
    """Fields every method shares. Subclasses add their own with :func:`param`."""

    seed: int = param(0, min=0, max=2**31 - 1, help="Random seed for Python, numpy, torch and K-means; same seed → same result on CPU.")
    n_clusters: int | None = param(
        None, min=2, max=500,
        help="Number of clusters K. Leave empty to let a method that can estimate K do so (Leiden-based).",
    )
    device: str = param("auto", choices=("auto", "cpu", "cuda"), advanced=True,
                        help="Where to train: 'auto' uses a CUDA GPU when one is present.")
    snapshot_every: int = param(5, min=0, max=1000, advanced=True,
                                help="Take an embedding snapshot every this many epochs (and at the first and last); 0 = only first and last.")
    torch_threads: int = param(0, min=0, max=256, advanced=True,
                               help="CPU threads torch uses for this run (restored afterwards); 0 = the cores free at "
                                    "start (cores minus load), or SCCLUST_THREADS when set.")

    #: named presets: {name: {field: value}}; the first is the default unless ``default_preset`` says otherwise
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: one line per preset shown next to its name (say when a preset is an adaptation, not the paper)
    PRESET_NOTES: ClassVar[dict[str, str]] = {}
    #: presets for the test suite (seconds on ~150 cells): the CLI and the library take them, the app never offers them
    TEST_PRESETS: ClassVar[tuple[str, ...]] = ("tiny",)

    # ----------------------------------------------------------------- presets
    @classmethod
    def preset_names(cls) -> list[str]:
        return list(cls.PRESETS)

    @classmethod
    def user_presets(cls) -> list[str]:
        """The presets offered to people: all but the test presets."""
        return [p for p in cls.PRESETS if p not in cls.TEST_PRESETS]

    @classmethod
    def default_preset(cls) -> str | None:
        """``paper`` when CUDA is available, ``cpu`` otherwise (if both exist); else the first preset."""
        if not cls.PRESETS:
            return None
        if "paper" in cls.PRESETS and "cpu" in cls.PRESETS:
            from .device import cuda_available

            return "paper" if cuda_available() else "cpu"
        return next(iter(cls.user_presets() or cls.PRESETS))

    @classmethod
    def from_preset(cls, name: str | None = None, **overrides: Any) -> Self:
        """Build a config from a named preset (``None`` → the default preset), then apply overrides."""
        name = name if name is not None else cls.default_preset()
        values: dict[str, Any] = {}
        if name is not None:
            if name not in cls.PRESETS:
                raise ValueError(f"Unknown preset {name!r} for {cls.__name__}; choose one of {cls.preset_names()}")
            values.update(cls.PRESETS[name])
        values.update(overrides)
        return cls.from_dict(values)

    # ----------------------------------------------------------------- introspection
    @classmethod
    def field_specs(cls) -> list[FieldSpec]:
        """Widget descriptions of every field, in declaration order (basic fields first)."""
        hints = typing.get_type_hints(cls)
        specs = []
        for f in dataclasses.fields(cls):
            kind, optional = _kind_of(hints[f.name])
            meta = f.metadata
            choices = meta.get("choices")
            if choices:
                kind = "choice"
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            specs.append(FieldSpec(
                name=f.name, kind=kind, default=default, optional=optional, help=meta.get("help", ""),
                min=meta.get("min"), max=meta.get("max"), choices=choices, advanced=bool(meta.get("advanced")),
                label=meta.get("label") or f.name.replace("_", " "),
            ))
        return sorted(specs, key=lambda s: s.advanced)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build and validate; unknown keys raise (a typo must not be silently ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
        cfg = cls(**{k: v for k, v in values.items()})
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> Self:
        return type(self).from_dict({**self.to_dict(), **changes})

    def set_from_strings(self, pairs: Mapping[str, str]) -> Self:
        """Apply ``key=value`` strings (CLI ``--set``) converting each to its field's type."""
        specs = {s.name: s for s in self.field_specs()}
        changes: dict[str, Any] = {}
        for key, raw in pairs.items():
            if key not in specs:
                raise ValueError(f"Unknown parameter {key!r} for {type(self).__name__}; valid: {sorted(specs)}")
            changes[key] = _parse_value(specs[key], raw)
        return self.replace(**changes)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, the bad value and the allowed range/choices."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            kind, optional = _kind_of(hints[f.name])
            if value is None:
                if not optional:
                    raise ValueError(f"{f.name} must be set (got None)")
                continue
            if kind == "int" and isinstance(value, float) and float(value).is_integer():
                value = int(value)
                object.__setattr__(self, f.name, value)
            if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{f.name} must be an integer, got {value!r}")
            if kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ValueError(f"{f.name} must be a number, got {value!r}")
                value = float(value)
                if not math.isfinite(value):  # NaN passes every range comparison: refuse it by name
                    raise ValueError(f"{f.name} must be a finite number, got {value!r}")
                object.__setattr__(self, f.name, value)
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")
            choices = meta.get("choices")
            if choices and value not in choices:
                raise ValueError(f"{f.name}={value!r} is not one of {list(choices)}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                lo, hi = meta.get("min"), meta.get("max")
                if lo is not None and value < lo:
                    raise ValueError(f"{f.name}={value} is below its minimum {lo}")
                if hi is not None and value > hi:
                    raise ValueError(f"{f.name}={value} is above its maximum {hi}")

    def __post_init__(self) -> None:
        self.validate()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _parse_value(spec: FieldSpec, raw: str) -> Any:
    text = raw.strip()
    if spec.optional and text.lower() in ("", "none", "null"):
        return None
    if spec.kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{spec.name} expects true/false, got {raw!r}")
    try:
        if spec.kind == "int":
            return int(float(text)) if float(text).is_integer() else int(text)
        if spec.kind == "float":
            return float(text)
        if spec.kind == "int_list":
            return [int(v) for v in text.strip("[]()").replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{spec.name} expects a {spec.kind}, got {raw!r}") from None
    if spec.kind == "choice" and spec.choices and not isinstance(spec.choices[0], str):
        for c in spec.choices:
            if str(c) == text:
                return c
    if spec.kind == "str":
        # ``int | str`` fields such as n_hvg: numbers stay numbers
        try:
            return int(text)
        except ValueError:
            return text
    return text
