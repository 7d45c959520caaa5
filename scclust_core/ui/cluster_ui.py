"""Cluster page sections: method picker, K and device controls, start a background training job."""
from __future__ import annotations

import streamlit as st

from ..device import describe_devices
from ..jobs import TrainingJob, register_job
from ..methods import describe_methods, get_method
from . import forms, state

K_METHOD = "method_pick_saved"


def method_picker() -> str:
    rows = {r["name"]: r for r in describe_methods()}
    names = list(rows)
    saved = st.session_state.get(K_METHOD)
    idx = names.index(saved) if saved in names else (names.index("contrastive_sc") if "contrastive_sc" in names else 0)

    def fmt(n):
        r = rows[n]
        kind = "consensus" if n == "recommend" else ("deep" if r["deep"] else "classic")
        return f"{n} — {kind}"

    name = st.selectbox("Method", names, index=idx, format_func=fmt, key="method_pick",
                        on_change=lambda: st.session_state.__setitem__(K_METHOD, st.session_state["method_pick"]))
    st.session_state[K_METHOD] = name
    r = rows[name]
    fid = r["fidelity"]
    badge = (":green-badge[faithful re-implementation]" if fid == "faithful" else
             (":gray-badge[classic baseline]" if fid == "baseline" else f":orange-badge[{fid}]"))
    st.markdown(f"**{r['summary']}**  \n{badge}  \n*Citation:* {r['citation']}")
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


def k_control(name: str) -> tuple[int | None, str]:
    """Number of clusters: typed, from the reference annotation, or estimated by the method."""
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
        k = c2.number_input("K", min_value=2, max_value=500, value=int(st.session_state.get("k_typed", n_ref or 8)),
                            key=f"k_value_{name}")
        st.session_state["k_typed"] = int(k)
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
    running = state.active_job()
    c1, c2 = st.columns([1, 4])
    if c1.button("Start training", type="primary", icon=":material/play_arrow:", disabled=running is not None, key="start"):
        try:
            start_job(name, preset, params, k, device)
            st.rerun()
        except ValueError as exc:
            st.error(f"Cannot start: {exc}")
    if running is not None:
        c2.caption("A run is training; you can cancel it below. Start the next one when it ends.")


def delete_run_button(rec) -> None:
    """"Delete run" with a confirmation step (a popover), for finished, failed or interrupted runs."""
    if rec.status in ("running", "queued"):
        return
    with st.popover("Delete this run", icon=":material/delete:"):
        st.markdown(f"Delete run `{rec.run_id}` ({rec.method}) with its labels, curves, renames and cached views? "
                    "This cannot be undone.")
        if st.button("Delete permanently", type="primary", key=f"delete_{rec.run_id}"):
            try:
                state.delete_run(rec.run_id)
            except ValueError as exc:
                st.error(str(exc))
                return
            st.toast(f"Deleted run {rec.run_id}")
            st.rerun()
