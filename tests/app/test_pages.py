"""Streamlit AppTest: every page renders from an empty workspace and with a finished run; a K-means run
started from the Cluster page finishes and shows its metrics."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import md_plain
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = ["pages/1_data.py", "pages/2_cluster.py", "pages/3_explore.py", "pages/4_markers.py", "pages/5_compare.py",
         "pages/6_export.py"]


def _app(ws_id: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if ws_id:
        at.query_params["ws"] = ws_id
    return at


def _texts(at) -> str:
    """What the page shows (data-derived text is Markdown-escaped in the source)."""
    return md_plain(" ".join(str(e.value) for kind in (at.markdown, at.info, at.success, at.warning, at.caption)
                             for e in kind))


def test_pages_render_empty(ws_root):
    at = _app()
    at.run()
    assert not at.exception
    ws_id = at.query_params["ws"]
    # a page view writes nothing: the workspace directory appears with the first upload (issue 14.8)
    assert ws_id and not (ws_root / (ws_id[0] if isinstance(ws_id, list) else ws_id)).exists()
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, page
        assert not at.error, page
        assert any("No data yet" in i.value for i in at.info), page


def test_pages_render_with_finished_run(finished_ws):
    ws, run_id = finished_ws
    at = _app(ws.id)
    at.session_state["view_kind"] = "PCA"
    at.run()
    assert not at.exception and not at.error
    assert any(m.label == "Cells" and m.value == "150" for m in at.metric)
    assert at.selectbox(key="ref_pick").value == "cell_type"
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, page
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("pages/5_compare.py").run()
    assert any("ARI" == m.label for m in at.metric)
    at.switch_page("pages/2_cluster.py").run()
    assert any("kmeans" in s.value and "finished" in s.value for s in at.success)


def test_run_warnings_are_shown(finished_ws):
    """A stored result's label-free warnings (e.g. a collapsed clustering) appear on the Cluster page."""
    import json

    ws, run_id = finished_ws
    path = ws.runs_dir / run_id / "result.json"
    data = json.loads(path.read_text())
    data["extras"]["warnings"] = ["97% of the cells are in a single cluster: the training may have collapsed."]
    path.write_text(json.dumps(data))
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception
    assert any("single cluster" in w.value for w in at.warning)


def test_rename_merge_flows_to_markers(finished_ws):
    ws, run_id = finished_ws
    ws.set_edits(run_id, {"0": "merged", "1": "merged"})
    at = _app(ws.id)
    at.session_state["view_kind"] = "PCA"
    at.switch_page("pages/4_markers.py").run()
    assert not at.exception and not at.error
    assert "merged" in at.selectbox(key="mk_cluster").options


def test_cluster_page_kmeans_run(ws_root, tiny):
    from scclust_core.workspace import Workspace

    ws = Workspace.open("pagetest0001")
    ws.set_dataset(tiny, "tiny")
    ws.set_reference("cell_type")
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception
    at.selectbox(key="method_pick").set_value("kmeans").run()
    at.button(key="start").click().run()
    assert not at.exception and not at.error
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        at.run()  # run_every fragments do not fire under AppTest: rerun by hand
        if any("finished" in s.value for s in at.success):
            break
    assert not at.exception and not at.error
    assert any("kmeans" in s.value and "ARI" in s.value for s in at.success)
    assert len(ws.list_runs()) == 1


def test_bad_settings_show_a_message(ws_root, tiny):
    """K larger than the cells, and a count-based method on normalised data: clear messages, no exception."""
    import numpy as np

    from scclust_core.methods import list_methods
    from scclust_core.workspace import Workspace

    ws = Workspace.open("pagetest0002")
    norm = tiny.copy()
    norm.X = np.log1p(norm.X.toarray()) + 0.01
    ws.set_dataset(norm, "normalised")
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    from scclust_core.methods import get_method

    deep = [m for m in list_methods() if get_method(m).needs_counts]
    if deep:
        at.selectbox(key="method_pick").set_value(deep[0]).run()
        at.button(key="start").click().run()
        assert not at.exception
        assert any("raw integer counts" in e.value for e in at.error)
    at.selectbox(key="method_pick").set_value("kmeans").run()
    assert at.number_input(key="k_value_kmeans").max == 149  # K cannot reach the number of cells


def test_cluster_page_opens_on_the_consensus_and_survives_any_k_suggestion(ws_root, tiny, monkeypatch):
    """The page opens on the first registered method (the consensus); a default-K suggestion above the form's
    range (700 on 150 cells) is clamped, never a crash; Leiden offers a resolution, not a K it would ignore."""
    from scclust_core.ui import cluster_ui
    from scclust_core.workspace import Workspace

    monkeypatch.setattr(cluster_ui, "leiden_k", lambda adata, seed=0: 700)
    ws = Workspace.open("pagetest0005")
    ws.set_dataset(tiny, "tiny")
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception
    assert at.selectbox(key="method_pick").value == "recommend"
    at.selectbox(key="method_pick").set_value("kmeans").run()
    assert not at.exception and at.number_input(key="k_value_kmeans").value == 149
    assert "Suggested K = 700" in _texts(at)
    at.selectbox(key="method_pick").set_value("leiden").run()
    assert not at.exception
    assert not any(r.key == "k_mode_leiden" for r in at.radio)
    assert not any(w.key == "k_value_leiden" for w in at.number_input)
    assert "finds the number of clusters itself" in _texts(at)


def test_two_sessions_are_isolated(finished_ws):
    ws, run_id = finished_ws
    mine = _app(ws.id)
    mine.run()
    other = _app()  # another browser: no ?ws= → its own, empty workspace
    other.run()
    assert not other.exception
    other_id = other.query_params["ws"]
    other_id = other_id[0] if isinstance(other_id, list) else other_id
    assert other_id != ws.id
    assert any("No data loaded yet" in i.value for i in other.info)
    other.switch_page("pages/3_explore.py").run()
    assert any("No data yet" in i.value for i in other.info)
    mine.switch_page("pages/2_cluster.py").run()
    assert any("finished" in s.value for s in mine.success)


def test_refresh_reattaches_to_a_running_job(finished_ws, monkeypatch):
    """A new session on the same workspace (browser refresh) shows the job that is still training."""
    import threading

    import scclust_core.jobs.worker as jobs_worker
    from scclust_core.jobs import TrainingJob, register_job

    gate = threading.Event()

    class Blocking:
        name = "kmeans"

        def fit(self, adata, config, *, callback=None, label_key=None):
            callback.on_train_begin({"device": "cpu", "n_cells": adata.n_obs, "n_genes": adata.n_vars})
            gate.wait(30)
            raise ValueError("stopped by the test")

        def prepare(self, adata, config):  # pragma: no cover - replaced by the job
            raise NotImplementedError

    ws, _ = finished_ws
    monkeypatch.setattr(jobs_worker, "get_method", lambda name: Blocking())
    from scclust_core.methods import get_method

    cfg = get_method("kmeans").Config.from_preset(None, n_clusters=3)
    job = register_job(TrainingJob(ws.load_dataset(), "kmeans", cfg, runs_root=ws.runs_dir, workspace=ws.id,
                                   isolation="thread")).start()  # thread: the patched method stays in this process
    try:
        at = _app(ws.id)
        at.switch_page("pages/2_cluster.py").run()
        assert not at.exception
        assert any("Training" in m.value and "kmeans" in m.value for m in at.markdown)
        assert at.button(key=f"cancel_{job.run_id}")
    finally:
        gate.set()
        job.join(30)
    at.run()
    assert not at.exception
    assert any("stopped by the test" in e.value for e in at.error)


def test_qc_filter_and_undo(finished_ws):
    ws, _ = finished_ws
    at = _app(ws.id)
    at.run()
    at.number_input(key="f_min_counts").set_value(2600)
    at.button[[b.label for b in at.button].index("Apply filter")].click().run()
    assert not at.exception and not at.error
    n = ws.load_state()["n_cells"]
    assert 0 < n < 150
    assert any("QC-filtered" in i.value for i in at.info)
    at.button(key="undo_filter").click().run()
    assert not at.exception and ws.load_state()["n_cells"] == 150


@pytest.mark.slow  # the export computes a UMAP (numba compilation, ~20 s on a small CPU)
def test_second_run_compare_and_export_pages(finished_ws, kmeans_cfg):
    from scclust_core.jobs import TrainingJob

    ws, first = finished_ws
    job = TrainingJob(ws.load_dataset(), "kmeans", kmeans_cfg(k=2), runs_root=ws.runs_dir, workspace=ws.id).start()
    assert job.join(120) and job.status == "completed"
    import numpy as np

    # no cached UMAP for this run: the export computes it (inside its own status box)
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception and not at.error
    picker = [s for s in at.selectbox if s.label == "Show the training record of"]
    assert picker and len(picker[0].options) == 2
    at.switch_page("pages/5_compare.py").run()
    target = at.selectbox(key="cmp_target")
    run_option = next(o for o in target.options if o.startswith("run: "))
    target.set_value(run_option).run()
    assert not at.exception and not at.error
    assert any(m.label == "ARI" for m in at.metric)
    at.switch_page("pages/6_export.py").run()
    at.multiselect(key="exp_runs").set_value([first, job.run_id]).run()
    at.button(key="exp_build").click().run()
    assert not at.exception and not at.error
    got = at.session_state["_export_h5ad"]
    assert got[2][:8] == b"\x89HDF\r\n\x1a\n" and "obsm['X_umap']" in set(got[3]["key"])


def test_every_registered_method_gets_a_form(finished_ws):
    """The Cluster page lists every registered method and draws its generated form (presets, reset)."""
    from scclust_core.methods import list_methods

    ws, _ = finished_ws
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert {o.split(" — ")[0] for o in at.selectbox(key="method_pick").options} == set(list_methods())
    for name in list_methods():
        at.selectbox(key="method_pick").set_value(name).run()
        assert not at.exception, name
        assert not at.error, (name, [e.value for e in at.error])
        assert at.number_input  # the generated hyperparameter widgets
        reset = [b for b in at.button if b.label == "Reset to defaults"]
        if reset:
            reset[0].click().run()
            assert not at.exception, name


def test_pretty_labels():
    from scclust_core.config import FieldSpec
    from scclust_core.ui.forms import pretty_label

    def spec(name, label=None):
        return FieldSpec(name, "int", 1, False, "", None, None, None, False, label or name.replace("_", " "))

    assert pretty_label(spec("n_hvg")) == "Number of HVGs"
    assert pretty_label(spec("lr")) == "Learning rate"
    assert pretty_label(spec("kmeans_n_init")) == "K-means restarts"
    assert pretty_label(spec("tau", "temperature τ")) == "Temperature τ"


def test_live_view_while_training_names_every_number(finished_ws, monkeypatch):
    """While a run trains: the form and the runs table are drawn on demand; the runs table says "training… epoch
    2/10" with dashes (never None), the score cards carry their epoch, the snapshot heading counts the panels, and
    the time is a clock time, not 00:00."""
    import threading

    import numpy as np

    import scclust_core.jobs.worker as jobs_worker
    from scclust_core.jobs import TrainingJob, register_job
    from scclust_core.methods._base import EpochLog, Snapshot

    gate = threading.Event()
    ws, _ = finished_ws
    n = ws.load_dataset().n_obs

    class TwoEpochs:
        name = "kmeans"

        def fit(self, adata, config, *, callback=None, label_key=None):
            callback.on_train_begin({"device": "cpu", "n_cells": adata.n_obs, "n_genes": adata.n_vars})
            rng = np.random.default_rng(0)
            for e in (1, 2):
                snap = Snapshot(e, "train", rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 3, n))
                callback.on_epoch_end(EpochLog(e, "train", {"recon": 1.0 / e}, {"ari": 0.3 * e}, 0.1, 0.1 * e, 10), snap)
            gate.wait(30)
            raise ValueError("stopped by the test")

        def prepare(self, adata, config):  # pragma: no cover - replaced by the job
            raise NotImplementedError

    monkeypatch.setattr(jobs_worker, "get_method", lambda name: TwoEpochs())
    from scclust_core.methods import get_method

    cfg = get_method("kmeans").Config.from_preset(None, n_clusters=3)
    job = register_job(TrainingJob(ws.load_dataset(), "kmeans", cfg, runs_root=ws.runs_dir, workspace=ws.id,
                                   label_key="cell_type", isolation="thread")).start()  # the patch stays here
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(job.snapshot().history) < 2:
            time.sleep(0.1)
        at = _app(ws.id)
        at.switch_page("pages/2_cluster.py").run()
        assert not at.exception
        # while it trains, the form and the runs table wait behind toggles (drawing them slowed short trainings)
        assert not at.dataframe and "start" not in [b.key for b in at.button]
        at.toggle(key="runs_while_training").set_value(True)
        at.toggle(key="next_run_settings").set_value(True).run()
        assert at.button(key="start").disabled  # the next run's settings can be prepared; Start waits for the end
        table = at.dataframe[-1].value
        row = table[table["run"] == job.run_id].iloc[0]
        assert row["status"] == "training… epoch 2/10" and row["ARI"] == "–" and row["K"] == "–"
        assert "None" not in table.astype(str).to_numpy().ravel().tolist()
        assert row["started"].endswith("UTC") and not row["started"].startswith("00:00")
        labels = [md_plain(m.label) for m in at.metric]  # the column name is Markdown-escaped
        assert "ARI vs cell_type · epoch 2" in labels
        texts = _texts(at)
        assert "Loss at epoch 2 (train): recon 0.5" in texts
        assert "2 panels (epochs 1, 2)" in texts and "final: epoch 2, ARI 0.600" in texts
        assert "labels are never used to pick the epoch" in texts.lower()
        imgs = at.get("image")  # the live curves and grid are images (cheap for the browser to show again)
        assert [c for i in imgs for c in i.captions] == [
            "Loss and score curves during training (interactive when the run ends)",
            "Embedding snapshots during training (PCA of the latent space)"]
        assert not at.get("plotly_chart")
        at.run()  # nothing new since: the views are shown again from the last build, not rebuilt
        assert at.session_state[f"_views_{job.run_id}"]["version"] == (2, 2, "running") and not at.exception
    finally:
        gate.set()
        job.join(30)


def test_estimate_and_default_k_before_start(ws_root, tiny):
    """Without a reference the default K comes from a label-free Leiden estimate and says so; the time and
    memory estimate and the method card are shown before Start."""
    from scclust_core.workspace import Workspace

    ws = Workspace.open("pagetest0003")
    ws.set_dataset(tiny, "tiny")
    at = _app(ws.id)
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception and not at.error
    at.selectbox(key="method_pick").set_value("contrastive_sc").run()
    texts = _texts(at)
    assert "Suggested K" in texts and "Leiden" in texts and "no labels used" in texts
    k = at.number_input(key="k_value_contrastive_sc").value
    assert 2 <= k <= 12
    assert any("Estimated:" in i.value and "150 cells" in i.value for i in at.info)
    assert "When to pick it" in texts


def test_compare_with_an_annotation_that_cannot_score_says_na(finished_ws):
    """A one-category annotation gives no ARI/NMI/accuracy (n/a with the reason), never a fake 1.000."""
    import pandas as pd

    ws, _ = finished_ws
    ad = ws.load_dataset()
    ad.obs["one_type"] = pd.Categorical(["T cell"] * ad.n_obs)
    ws.set_dataset(ad, "tiny synthetic")
    ws.set_reference("one_type")  # the reference is offered even with one category (others need two)
    at = _app(ws.id)
    at.switch_page("pages/5_compare.py").run()
    at.selectbox(key="cmp_target").set_value("annotation: one_type").run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values.get("ARI") == "n/a" and values.get("NMI") == "n/a"
    assert any("single category" in w.value for w in at.warning)
