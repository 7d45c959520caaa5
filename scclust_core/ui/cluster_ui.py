"""Cluster page sections: method picker, K and device controls, start a background training job."""
from __future__ import annotations

import streamlit as st

import json

from .. import estimate
from ..device import describe_devices
from ..graph import leiden_k
from ..jobs import TrainingJob, register_job
from ..methods import describe_methods, get_method
from . import forms, live, state

K_METHOD = "method_pick_saved"

def method_picker() -> str:
    rows = {r["name"]: r for r in describe_methods()}
    names = list(rows)
    saved = st.session_state.get(K_METHOD)
    idx = names.index(saved) if saved in names else 0  # the registry's order: the consensus first

    def fmt(n):
        return f"{n} — {rows[n]['kind']}"

    name = st.selectbox("Method", names, index=idx, format_func=fmt, key="method_pick",
                        on_change=lambda: st.session_state.__setitem__(K_METHOD, st.session_state["method_pick"]))
    st.session_state[K_METHOD] = name
    r = rows[name]
    fid = r["fidelity"]
    badge = (":green-badge[faithful re-implementation]" if fid == "faithful" else
             (":gray-badge[classic baseline]" if fid == "baseline" else f":orange-badge[{fid}]"))
    what, helps = (r["card"].what or r["summary"]), r["card"].when
    with st.container(border=True):
        st.markdown(f"**{name}** {badge}  \n{what}  \n*Paper:* {r['citation']}"
                    + (f"  \n*When to pick it:* {helps}" if helps else ""))
    if r.get("recipe"):
        st.caption(f"Preprocessing: {r['recipe']}")
    if r["needs_counts"] and not _has_counts():
        st.warning("This method needs raw integer counts, and this dataset has none (X looks normalised). "
                   "Upload the raw count matrix, or use Leiden / K-means.")
    return name


def _has_counts() -> bool:
    from ..preprocess import get_counts

    try:
        get_counts(state.adata())
        return True
    except ValueError:
        return False


def _k_estimate() -> tuple[int, str]:
    """Label-free default K for this dataset (Leiden on the PCA graph), computed once and kept in the cache."""
    ws = state.workspace()
    fp = ws.fingerprint
    path = ws.cache_dir / "k_estimate.json"
    try:
        got = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        got = {}
    if got.get("fingerprint") != fp or "k" not in got:
        with st.spinner("Estimating a default number of clusters (Leiden on the PCA graph, label-free)…"):
            got = {"fingerprint": fp, "k": leiden_k(state.adata(), seed=0)}
        path.write_text(json.dumps(got))
    return int(got["k"]), "Leiden (resolution 1) on the kNN graph of 50 PCs, no labels used"


def k_control(name: str) -> tuple[int | None, str]:
    """Number of clusters: typed (default: the reference's count, else a label-free Leiden estimate), from the
    reference annotation, or estimated by the method."""
    m = get_method(name)
    ad = state.adata()
    ref = state.reference()
    options = ["Type it"]
    n_ref = None
    if ref is not None:
        n_ref = int(ad.obs[ref].nunique())
        options.append(f"Same as {ref} ({n_ref})")
    if m.can_estimate_k:
        options.append("Let the method estimate it")
    c1, c2 = st.columns([2, 1])
    default = 1 if n_ref else 0
    choice = c1.radio("Number of clusters (K)", options, index=min(default, len(options) - 1), horizontal=True,
                      key=f"k_mode_{name}")
    if choice == "Type it":
        typed_key = f"k_typed_{state.workspace().fingerprint}"
        if n_ref:
            k0, source = n_ref, f"the number of {ref} categories"
        else:
            k0, source = _k_estimate()
        k = c2.number_input("K", min_value=2, max_value=500, value=int(st.session_state.get(typed_key, k0)),
                            key=f"k_value_{name}")
        st.session_state[typed_key] = int(k)
        st.caption(f"Suggested K = {k0}: {source}." + ("" if int(k) == k0 else f" You typed {int(k)}."))
        return int(k), "typed"
    if choice.startswith("Same as"):
        return n_ref, "reference"
    return None, "estimated"


def device_control(name: str) -> str:
    spec = next((f for f in get_method(name).Config.field_specs() if f.name == "device"), None)
    allowed = set(spec.choices) if spec is not None and spec.choices else {"cpu", "cuda"}
    devs = [d for d in describe_devices() if d["device"] in allowed]  # methods place models on cuda:0
    labels = {d["device"]: d["name"] + (f" · {d['memory_gib']} GiB" if d.get("memory_gib") else "") for d in devs}
    keys = list(labels)
    default = next((k for k in keys if k.startswith("cuda")), "cpu")
    return st.selectbox("Device", keys, index=keys.index(default), format_func=labels.get, key="device_pick",
                        help="What this server has: CUDA GPUs (name and memory) or the CPU.")


def estimate_card(name: str, preset: str | None, params: dict, device: str) -> dict:
    """Time and peak memory for the loaded data, preset, settings and device (shown before Start)."""
    ad = state.adata()
    try:
        cfg = get_method(name).Config.from_preset(preset, **params).to_dict()
    except (TypeError, ValueError):
        cfg = None
    est = estimate.estimate(get_method(name), preset, ad.n_obs, ad.n_vars, device=device, config=cfg)
    where = f"{ad.n_obs:,} cells × {ad.n_vars:,} genes on {device}"
    if est.seconds is None and est.mib is None:
        st.caption(f"No time estimate for {where}: {est.note}.")
    else:
        st.info(f"**Estimated:** {est.text()} for {where}  \n{est.note}. The first run after the server starts "
                "can take a few minutes longer (one-time compilation of numba code), and other jobs on the same "
                "CPU slow it down.", icon=":material/timer:")
    return {"seconds": est.seconds, "mib": est.mib, "text": est.text(), "note": est.note}


def start_job(name: str, preset: str | None, params: dict, k: int | None, device: str) -> TrainingJob:
    """Validate the settings and start a background training job (raises ValueError with a clear message)."""
    ad = state.adata()
    m = get_method(name)
    if k is not None and k >= ad.n_obs:
        raise ValueError(f"K={k} is not smaller than the number of cells ({ad.n_obs}); choose a smaller K")
    if m.needs_counts:
        from ..preprocess import get_counts

        get_counts(ad)  # raises a clear message for normalised data
    config = m.Config.from_preset(preset, **params, n_clusters=k, device=device)
    ws = state.workspace()
    ws.check_quota(what="Another run")  # a clear message (WorkspaceQuotaError is a ValueError) instead of a full disk
    job = TrainingJob(ad, name, config, runs_root=ws.runs_dir, preset=preset, label_key=state.reference(),
                      dataset_name=ws.load_state().get("dataset_name"), workspace=ws.id)
    register_job(job).start()
    st.session_state["last_started_run"] = job.run_id
    return job


def settings_and_start() -> None:
    name = method_picker()
    k, _ = k_control(name)
    device = device_control(name)
    st.markdown("##### Hyperparameters")
    preset, params = forms.config_form(name, key="cfg")
    est = estimate_card(name, preset, params, device)
    running = state.active_job()
    c1, c2 = st.columns([1, 4])
    if c1.button("Start training", type="primary", icon=":material/play_arrow:", disabled=running is not None, key="start"):
        try:
            job = start_job(name, preset, params, k, device)
            live.save_estimate(job.run_id, est)
            st.rerun()
        except ValueError as exc:
            st.error(f"Cannot start: {exc}")
    if running is not None:
        c2.caption("A run is training; you can cancel it below. Start the next one when it ends.")
