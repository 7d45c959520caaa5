"""Hyperparameter forms generated from a method's config dataclass (basic fields first, advanced folded)."""
from __future__ import annotations

import re
from typing import Any

import streamlit as st

from ..config import FieldSpec
from ..methods import get_method

#: fields the Cluster page draws itself (K and device have their own controls)
SKIP = ("n_clusters", "device")


def _store(key: str, method: str) -> dict:
    return st.session_state.setdefault(f"_form_{key}_{method}", {"values": {}, "nonce": 0, "preset": None})


def _preset_defaults(cfg_cls, preset: str | None) -> dict[str, Any]:
    defaults = {s.name: s.default for s in cfg_cls.field_specs()}
    if preset:
        defaults.update(cfg_cls.PRESETS.get(preset, {}))
    return defaults


_WORDS = {"lr": "learning rate", "hvg": "HVG", "hvgs": "HVGs", "pcs": "PCs", "knn": "kNN", "std": "SD", "sd": "SD",
          "kmeans": "K-means", "ae": "autoencoder", "zinb": "ZINB", "gcn": "GCN", "iter": "iterations"}


def pretty_label(spec: FieldSpec) -> str:
    """Readable widget label: the config's own label, else its name with abbreviations spelled out."""
    if spec.label and spec.label != spec.name.replace("_", " "):
        text = spec.label
    else:
        name = spec.name.replace("n_init", "restarts").replace("n_hvg", "n_hvgs")
        words = name.split("_")
        if words[0] == "n" and len(words) > 1:
            words = ["number", "of"] + words[1:]
        text = " ".join(_WORDS.get(w, w) for w in words)
    return text[:1].upper() + text[1:]


_PRESET_WORDS = {"paper": "the published settings", "cpu": "adapted for machines without a GPU",
                 "default": "the recommended settings", "with_deep": "adds a deep view (slower)",
                 "thorough": "more candidates and deep views (slower)"}


def plain_note(note: str) -> str:
    """A preset note for people: the fidelity tags ([A], [C], [P], [Q]: provenance, in docs/methods.md) dropped."""
    return re.sub(r"\s*\[[ACPQ]\]", "", note).replace("  ", " ").strip()


def preset_label(name: str, note: str) -> str:
    """``name — what it is`` in a few whole words (the full note is shown under the picker)."""
    if name in _PRESET_WORDS:
        return f"{name} — {_PRESET_WORDS[name]}"
    text = plain_note(note).split(":")[0].split(";")[0].split(". ")[0]
    words, out = text.split(), ""
    for w in words:
        if len(out) + len(w) + 1 > 60:
            break
        out = f"{out} {w}".strip()
    return f"{name} — {out}" if out else name


def _widget(spec: FieldSpec, value: Any, wkey: str):
    label = pretty_label(spec)
    help_ = spec.help + (" (optional: leave empty for the method's choice)" if spec.optional else "")
    if spec.kind == "bool":
        return st.checkbox(label, value=bool(value), help=help_, key=wkey)
    if spec.kind == "choice":
        choices = list(spec.choices or [])
        idx = choices.index(value) if value in choices else 0
        return st.selectbox(label, choices, index=idx, help=help_, key=wkey)
    if spec.kind == "int":
        lo = int(spec.min) if spec.min is not None else None
        hi = int(spec.max) if spec.max is not None and spec.max < 2**53 else None
        return st.number_input(label, min_value=lo, max_value=hi, value=None if value is None else int(value), step=1,
                               help=help_, key=wkey, placeholder="auto" if spec.optional else None)
    if spec.kind == "float":
        v = None if value is None else float(value)
        step = abs(v) / 10 if v else 0.1
        return st.number_input(label, min_value=None if spec.min is None else float(spec.min),
                               max_value=None if spec.max is None else float(spec.max), value=v, step=float(step),
                               format="%g", help=help_, key=wkey, placeholder="auto" if spec.optional else None)
    if spec.kind == "int_list":
        text = st.text_input(label, value=", ".join(str(x) for x in (value or [])), help=help_ + " (comma-separated)",
                             key=wkey)
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{spec.name} expects whole numbers separated by commas, got {text!r}") from None
    text = st.text_input(label, value="" if value is None else str(value), help=help_, key=wkey)
    if spec.optional and not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        return text.strip()


def config_form(method: str, *, key: str = "cfg") -> tuple[str | None, dict[str, Any]]:
    """Draw the preset picker and the parameter widgets; returns ``(preset, values)`` (not yet validated).

    Values the user changed are kept in a plain session key, so they survive page switches; "Reset to
    defaults" puts back the preset's values.
    """
    m = get_method(method)
    cfg_cls = m.Config
    store = _store(key, method)
    presets = cfg_cls.user_presets()
    preset = None
    if presets:
        default = store["preset"] if store["preset"] in presets else cfg_cls.default_preset()
        c1, c2 = st.columns([3, 1])
        preset = c1.selectbox(
            "Preset", presets, index=presets.index(default) if default in presets else 0, key=f"{key}_{method}_preset",
            format_func=lambda p: preset_label(p, cfg_cls.PRESET_NOTES.get(p, "")),
            help="'paper' = the published settings (fast on a GPU); 'cpu' = adapted to finish in minutes on a "
                 "laptop. The full note of the chosen preset is shown below.",
        )
        store["preset"] = preset
        if cfg_cls.PRESET_NOTES.get(preset):
            st.caption(plain_note(cfg_cls.PRESET_NOTES[preset]))
        c2.write("")
        if c2.button("Reset to defaults", key=f"{key}_{method}_reset", help="Back to the preset's values"):
            store["values"].pop(preset, None)
            store["nonce"] += 1
    saved = store["values"].setdefault(preset or "", {})
    defaults = _preset_defaults(cfg_cls, preset)
    specs = [s for s in cfg_cls.field_specs() if s.name not in SKIP]
    basic = [s for s in specs if not s.advanced]
    advanced = [s for s in specs if s.advanced]
    values: dict[str, Any] = {}
    errors: list[str] = []

    def draw(group, container):
        cols = container.columns(3)
        for i, s in enumerate(group):
            wkey = f"{key}_{method}_{preset}_{store['nonce']}_{s.name}"
            with cols[i % 3]:
                try:
                    v = _widget(s, saved.get(s.name, defaults.get(s.name)), wkey)
                except ValueError as exc:
                    errors.append(str(exc))
                    continue
            values[s.name] = v
            if v != defaults.get(s.name):
                saved[s.name] = v
            else:
                saved.pop(s.name, None)

    draw(basic, st)
    if advanced:
        with st.expander(f"Advanced parameters ({len(advanced)})"):
            draw(advanced, st)
    if errors:
        raise ValueError("; ".join(errors))
    changed = {k: v for k, v in values.items() if v != defaults.get(k)}
    return preset, changed
