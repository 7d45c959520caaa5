"""Cluster page sections: method picker, K and device controls, start a background training job."""
from __future__ import annotations

import streamlit as st

from .. import estimate
from ..device import describe_devices
from ..graph import leiden_k
from ..integrate import check_batches, integration_effect
from ..jobs import TrainingJob, register_job
from ..config import MethodConfig
from ..methods import ClusteringMethod, describe_methods, get_method
from . import forms, run_record, state
from .common import md_text

K_METHOD = "method_pick_saved"
#: the largest K the form offers (far above any cell-type count; the method's own range still applies)
MAX_K = 1000

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
    got = ws.read_cache("k_estimate.json", "json")  # None when absent or damaged (then recomputed)
    got = got if isinstance(got, dict) else {}
    if got.get("fingerprint") != fp or "k" not in got:
        with st.spinner("Estimating a default number of clusters (Leiden on the PCA graph, label-free)…"):
            got = {"fingerprint": fp, "k": leiden_k(state.adata(), seed=0)}
        ws.write_cache("k_estimate.json", got)
    return int(got["k"]), "Leiden (resolution 1) on the kNN graph of 50 PCs, no labels used"


def k_control(m: ClusteringMethod) -> tuple[int | None, str]:
    """Number of clusters: typed (default: the reference's count, else a label-free Leiden estimate), from the
    reference annotation, or estimated by the method; nothing for a method that does not take K."""
    name = m.name
    if not m.takes_k:
        st.caption(f"{md_text(name)} finds the number of clusters itself: set its resolution in the hyperparameters "
                   "below (higher → more, smaller clusters).")
        return None, "not used"
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
                      key=f"k_mode_{name}", format_func=md_text)  # radio options render Markdown
    if choice == "Type it":
        typed_key = f"k_typed_{state.workspace().fingerprint}"
        if n_ref:
            k0, source = n_ref, f"the number of {md_text(ref)} categories"
        else:
            k0, source = _k_estimate()
        k_max = max(2, min(ad.n_obs - 1, MAX_K))  # a suggestion or a saved value beyond it never crashes the page
        k_start = min(max(int(st.session_state.get(typed_key, k0)), 2), k_max)
        k = c2.number_input("K", min_value=2, max_value=k_max, value=k_start, key=f"k_value_{name}")
        st.session_state[typed_key] = int(k)
        st.caption(f"Suggested K = {k0}: {source}." + ("" if int(k) == k0 else f" You typed {int(k)}."))
        return int(k), "typed"
    if choice.startswith("Same as"):
        return n_ref, "reference"
    return None, "estimated"


def device_control(m: ClusteringMethod) -> str:
    spec = next((f for f in m.Config.field_specs() if f.name == "device"), None)
    allowed = set(spec.choices) if spec is not None and spec.choices else {"cpu", "cuda"}
    devs = [d for d in describe_devices() if d["device"] in allowed]  # methods place models on cuda:0
    labels = {d["device"]: d["name"] + (f" · {d['memory_gib']} GiB" if d.get("memory_gib") else "") for d in devs}
    keys = list(labels)
    default = next((k for k in keys if k.startswith("cuda")), "cpu")
    return st.selectbox("Device", keys, index=keys.index(default), format_func=labels.get, key="device_pick",
                        help="What this server has: CUDA GPUs (name and memory) or the CPU.")


def estimate_card(m: ClusteringMethod, preset: str | None, config: MethodConfig | None, device: str) -> dict:
    """Time and peak memory for the loaded data, preset, settings and device (shown before Start)."""
    ad = state.adata()
    est = estimate.estimate(m, preset, ad.n_obs, ad.n_vars, device=device,
                            config=config.to_dict() if config is not None else None)
    where = f"{ad.n_obs:,} cells × {ad.n_vars:,} genes on {device}"
    if est.seconds is None and est.mib is None:
        st.caption(f"No time estimate for {where}: {est.note}.")
    else:
        st.info(f"**Estimated:** {est.text()} for {where}  \n{est.note}. The first run after the server starts "
                "can take a few minutes longer (one-time compilation of numba code), and other jobs on the same "
                "CPU slow it down.", icon=":material/timer:")
    return {"seconds": est.seconds, "mib": est.mib, "text": est.text(), "note": est.note}


def build_config(m: ClusteringMethod, preset: str | None, params: dict, k: int | None,
                 device: str) -> tuple[MethodConfig | None, str | None]:
    """The run's config, built once per page run: ``(config, None)``, or ``(None, why)`` for settings that do not
    validate (the form shows why and Start says it cannot start)."""
    try:
        config = m.Config.from_preset(preset, **params, n_clusters=k, device=device)
        config.validate()
        return config, None
    except (TypeError, ValueError) as exc:
        return None, str(exc)


def samples_controls(m: ClusteringMethod) -> dict:
    """With a sample key of ≥ 2 samples: the integration (the method's own choices, Harmony by default, and what
    it does for this method); with flagged doublets: whether to leave them out. ``start_job``'s options."""
    ad = state.adata()
    out: dict = {}
    key = state.batch_key()
    if key is not None:
        try:
            batches = check_batches(ad, key, integration="none")
        except ValueError as exc:
            st.warning(f"Sample key '{md_text(key)}': {md_text(exc)} Runs are made without it (Data page).")
            batches = None
        if batches is not None:
            options = list(m.integrations)
            choice = st.selectbox(f"Integration of the {batches.n} samples in {md_text(key)}", options,
                                  index=options.index("harmony") if "harmony" in options else 0,
                                  key=f"integration_{m.name}",
                                  help="How this method corrects for the sample/batch of each cell (docs/methods.md "
                                       "§0.11). Batch mixing (batch ASW, iLISI) is measured either way.")
            st.caption(f"**{md_text(choice)}** for {md_text(m.name)}: {integration_effect(choice, m.kind)}")
            out.update(batch_key=key, integration=choice)
    if "predicted_doublet" in ad.obs:
        n = int(ad.obs["predicted_doublet"].to_numpy(dtype=bool).sum())
        if n and st.checkbox(f"Leave the {n:,} predicted doublets out of this run", value=False,
                             key="exclude_doublets", help="They get no cluster (like cells a method's QC drops); "
                                                          "the data keeps them."):
            out["exclude"] = ad.obs["predicted_doublet"].to_numpy(dtype=bool)
    return out


def start_job(m: ClusteringMethod, preset: str | None, config: MethodConfig, *, batch_key: str | None = None,
              integration: str | None = None, exclude=None) -> TrainingJob:
    """Check the data against the method and start a background training job (ValueError with a clear message)."""
    ad = state.adata()
    k = config.n_clusters
    n_cells = ad.n_obs - (0 if exclude is None else int(exclude.sum()))
    if k is not None and k >= n_cells:
        raise ValueError(f"K={k} is not smaller than the number of cells ({n_cells}); choose a smaller K")
    if batch_key is not None:  # a sample too small to correct is said here, not after the job starts
        check_batches(ad if exclude is None else ad[~exclude], batch_key, integration=integration or "harmony")
    if m.needs_counts:
        from ..preprocess import get_counts

        get_counts(ad)  # raises a clear message for normalised data
    ws = state.workspace()
    ws.check_quota(what="Another run")  # a clear message (WorkspaceQuotaError is a ValueError) instead of a full disk
    job = TrainingJob(ad, m.name, config, runs_root=ws.runs_dir, preset=preset, label_key=state.reference(),
                      dataset_name=ws.load_state().get("dataset_name"), workspace=ws.id, batch_key=batch_key,
                      integration=integration, exclude=exclude, exclude_reason="predicted doublets")
    register_job(job).start()
    st.session_state["last_started_run"] = job.run_id
    return job


def settings_and_start() -> None:
    """The method, K, device and hyperparameters; the estimate; Start. The method is looked up and its config
    built once per page run."""
    m = get_method(method_picker())
    k, _ = k_control(m)
    device = device_control(m)
    fit_options = samples_controls(m)
    st.markdown("##### Hyperparameters")
    preset, params = forms.config_form(m.name, key="cfg")
    config, problem = build_config(m, preset, params, k, device)
    est = estimate_card(m, preset, config, device)
    running = state.active_job()
    c1, c2 = st.columns([1, 4])
    if c1.button("Start training", type="primary", icon=":material/play_arrow:", disabled=running is not None, key="start"):
        try:
            if config is None:
                raise ValueError(problem or "the settings are not valid")
            job = start_job(m, preset, config, **fit_options)
            run_record.save_estimate(job.run_id, est)
            st.rerun()
        except ValueError as exc:
            st.error(f"Cannot start: {md_text(exc)}")
    if running is not None:
        c2.caption("A run is training; you can cancel it below. Start the next one when it ends.")
