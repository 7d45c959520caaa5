"""Several samples in the app: files joined as samples, the sample key confirmed (never silently), QC and doublets
per sample, integration on the Cluster page, clusters × samples on Compare, and what the export keeps."""
from __future__ import annotations

import io
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from conftest import kmeans_config
from helpers import batch_split_samples, md_plain, sample_file_bytes, synthetic_counts
from streamlit.testing.v1 import AppTest

from scclust_core.jobs import TrainingJob
from scclust_core.samples import read_many
from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _texts(at) -> str:
    return md_plain(" ".join(str(e.value) for kind in (at.markdown, at.info, at.success, at.warning, at.caption,
                                                       at.error) for e in kind))


def _page(ws_id: str, page: str, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ws"] = ws_id
    at.switch_page(page)
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _files() -> list[dict]:
    parts = batch_split_samples()
    return [{"id": "f1", "name": "donorA.h5ad", "data": sample_file_bytes(parts[0], "h5ad")},
            {"id": "f2", "name": "donorB.csv", "data": sample_file_bytes(parts[1], "csv")},
            {"id": "f3", "name": "donorC.zip", "data": sample_file_bytes(parts[2], "zip")}]


def _joined(**kw) -> anndata.AnnData:
    f = _files()[:2]
    return read_many([x["data"] for x in f], filenames=[x["name"] for x in f], **kw)


def _table(at, column: str) -> pd.DataFrame | None:
    """The page's table with ``column`` (AppTest does not expose a dataframe's key)."""
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


def _ws_with(ad, *, key: str | None = "sample", ref: str | None = None) -> Workspace:
    ws = Workspace.create()
    ws.set_dataset(ad, "samples")
    if ref:
        ws.set_reference(ref)
    if key:
        ws.set_batch_key(key)
    return ws


# --------------------------------------------------------------------------- the workspace keeps the key
def test_the_workspace_keeps_the_confirmed_sample_key_like_the_reference(ws_root):
    from scclust_core.preprocess import filter_cells_genes

    ad = _joined()
    ws = _ws_with(ad)
    assert Workspace.open(ws.id).batch_key == "sample"  # persisted in state.json
    ws.set_dataset(filter_cells_genes(ad, min_counts=1), "filtered", filtered_from_original=True)
    assert ws.batch_key == "sample"  # kept by QC filtering
    ws.set_dataset(synthetic_counts(80, 40), "one sample")
    assert ws.batch_key is None  # another dataset: its own choices
    ws.set_dataset(ad, "samples again")
    assert ws.batch_key == "sample"  # re-upload restores it
    with pytest.raises(ValueError, match="Only annotations of the current dataset"):
        ws.update_dataset(synthetic_counts(80, 40))


# --------------------------------------------------------------------------- 1. samples in
def test_files_are_joined_as_named_samples_and_the_page_says_which_genes_each_lost(ws_root, tiny):
    ws = _ws_with(tiny, key=None)
    at = _page(ws.id, "pages/1_data.py", _samples_pending=_files())
    assert "3 files: join them into one dataset" in _texts(at)
    assert ws.load_dataset().n_obs == tiny.n_obs  # nothing joined before the button
    at.text_input(key="sample_name_f2").set_value("donor B")
    at.button(key="join_go").click().run()
    assert not at.exception and not at.error
    ad = ws.load_dataset()
    assert list(ad.obs["sample"].cat.categories) == ["donorA", "donor B", "donorC"]
    assert ad.obs["sample"].value_counts().to_dict() == {"donorA": 150, "donor B": 130, "donorC": 120}
    assert ad.n_vars == 295 and ws.batch_key == "sample"
    genes = next(d.value for d in at.dataframe if "genes lost (not in every file)" in d.value.columns)
    assert genes.set_index("sample")["genes lost (not in every file)"].to_dict() == {"donorA": 5, "donor B": 5,
                                                                                     "donorC": 0}
    assert "Sample key **sample**: 3 samples" in _texts(at)


def test_the_uploader_takes_several_files_and_one_file_still_loads_at_once(ws_root, tiny):
    ws = _ws_with(tiny, key=None)
    at = _page(ws.id, "pages/1_data.py")
    assert at.file_uploader(key="upload").accept_multiple_files
    files = _files()
    at.file_uploader(key="upload").set_value([(f["name"], f["data"], "application/octet-stream")
                                              for f in files]).run()
    assert not at.exception and "3 files: join them into one dataset" in _texts(at)
    assert ws.load_dataset().n_obs == tiny.n_obs
    at.button(key="join_go").click().run()
    assert list(ws.load_dataset().obs["sample"].cat.categories) == ["donorA", "donorB", "donorC"]
    at.file_uploader(key="upload").set_value([(files[0]["name"], files[0]["data"], "application/octet-stream")]).run()
    assert not at.exception and "join them" not in _texts(at)
    ad = ws.load_dataset()
    assert ad.n_obs == 150 and "sample" not in ad.obs and ws.batch_key is None  # one file: read as before


def test_keep_every_gene_joins_the_union(ws_root, tiny):
    ws = _ws_with(tiny, key=None)
    at = _page(ws.id, "pages/1_data.py", _samples_pending=_files())
    at.checkbox(key="join_outer").check()
    at.button(key="join_go").click().run()
    ad = ws.load_dataset()
    assert ad.n_vars == 300
    c = ad[ad.obs["sample"] == "donorC", [f"gene{i}" for i in range(295, 300)]].X
    assert (c.toarray() if hasattr(c, "toarray") else c).sum() == 0  # zeros where the file lacks the gene
    assert "every gene was kept" in _texts(at)


def test_files_without_a_shared_gene_leave_the_data_as_it_was(ws_root, tiny):
    ws = _ws_with(tiny, key=None)
    before = ws.fingerprint
    a, b = synthetic_counts(60, 40, seed=1), synthetic_counts(60, 40, seed=2)
    b.var_names = [f"other{i}" for i in range(40)]
    files = [{"id": "x1", "name": "a.h5ad", "data": sample_file_bytes(a, "h5ad")},
             {"id": "x2", "name": "b.h5ad", "data": sample_file_bytes(b, "h5ad")}]
    at = _page(ws.id, "pages/1_data.py", _samples_pending=files)
    at.button(key="join_go").click().run()
    assert not at.exception
    assert any("share no gene" in e.value and "previous data and runs are unchanged" in e.value for e in at.error)
    assert ws.fingerprint == before and ws.batch_key is None


def test_one_file_dataset_shows_no_sample_controls(ws_root, tiny):
    ws = _ws_with(tiny, key=None, ref="cell_type")
    at = _page(ws.id, "pages/1_data.py")
    assert not at.error
    assert _table(at, "removed by the thresholds") is None
    assert "One sample" in _texts(at)
    at = _page(ws.id, "pages/2_cluster.py")
    at.selectbox(key="method_pick").set_value("kmeans").run()
    assert "integration_kmeans" not in [s.key for s in at.selectbox]


# --------------------------------------------------------------------------- the sample key, confirmed
def test_an_obs_column_becomes_the_sample_key_only_when_confirmed(ws_root, tiny):
    tiny.obs["batch"] = pd.Categorical(np.where(np.arange(tiny.n_obs) % 2, "run1", "run2"))
    ws = _ws_with(tiny, key=None, ref="cell_type")
    at = _page(ws.id, "pages/1_data.py")
    pick = at.selectbox(key="batch_pick")
    assert "cell_type" not in pick.options and "batch" in pick.options  # the reference is never offered
    assert pick.value == "(one sample: none)"
    pick.set_value("batch").run()
    assert ws.batch_key is None and "Not applied yet" in _texts(at)
    at.button(key="batch_confirm").click().run()
    assert ws.batch_key == "batch"
    assert "Sample key **batch**: 2 samples" in _texts(at)


def test_a_sample_key_with_missing_values_is_refused(ws_root, tiny):
    donor = np.where(np.arange(tiny.n_obs) % 2, "d1", "d2").astype(object)
    donor[:5] = None
    tiny.obs["donor"] = pd.Categorical(donor)
    ws = _ws_with(tiny, key=None)
    at = _page(ws.id, "pages/1_data.py")
    at.selectbox(key="batch_pick").set_value("donor").run()
    at.button(key="batch_confirm").click().run()
    assert not at.exception
    assert any("5 cells have no value" in md_plain(e.value) and "Nothing was changed" in e.value for e in at.error)
    assert ws.batch_key is None


def test_a_sample_key_with_one_value_is_said_and_not_integrated(ws_root, tiny):
    tiny.obs["batch"] = pd.Categorical(["only"] * tiny.n_obs)
    ws = _ws_with(tiny, key="batch")
    at = _page(ws.id, "pages/1_data.py")
    assert any("single value" in md_plain(w.value) for w in at.warning)
    at = _page(ws.id, "pages/2_cluster.py")
    at.selectbox(key="method_pick").set_value("kmeans").run()
    assert "integration_kmeans" not in [s.key for s in at.selectbox]
    assert any("single value" in md_plain(w.value) for w in at.warning)


# --------------------------------------------------------------------------- 2. QC per sample
def test_qc_per_sample_and_cells_removed_per_sample(ws_root):
    from scclust_core.preprocess import qc_metrics

    ad = _joined()
    ws = _ws_with(ad)
    at = _page(ws.id, "pages/1_data.py")
    table = _table(at, "removed by the thresholds")
    assert list(table["sample"]) == ["donorA", "donorB"] and list(table["cells"]) == [150, 130]
    assert "median counts" in table.columns and _chart_keys(at) >= {"qc_hist"}
    qc = qc_metrics(ad)
    thr = int(np.median(qc["total_counts"]))
    removed = (qc["total_counts"] < thr).groupby(ad.obs["sample"].astype(str).to_numpy()).sum()
    at.number_input(key="f_min_counts").set_value(thr)
    _submit(at)
    f = ws.load_state()["filter"]
    assert f["removed_per_sample"] == {k: int(v) for k, v in removed.items()} and removed.sum() > 0
    assert f"Cells removed per sample: donorA {removed['donorA']}" in _texts(at)


def _submit(at) -> None:
    """Click the QC form's "Apply filter" (a form submit button)."""
    btn = next(b for b in at.button if b.label == "Apply filter")
    btn.click().run()
    assert not at.exception


# --------------------------------------------------------------------------- 3. doublets
def test_doublets_are_flagged_per_sample_and_kept_until_removed(ws_root):
    ws = _ws_with(_joined())
    before = ws.fingerprint
    at = _page(ws.id, "pages/1_data.py")
    at.button(key="find_doublets").click().run()
    assert not at.exception and not at.error
    ad = ws.load_dataset()
    assert {"predicted_doublet", "doublet_score"} <= set(ad.obs) and ad.n_obs == 280 and ws.fingerprint == before
    table = _table(at, "% doublets")
    assert list(table["sample"]) == ["donorA", "donorB"] and list(table["cells"]) == [150, 130]
    n = int(ad.obs["predicted_doublet"].sum())
    if n:
        at.button(key="drop_doublets").click().run()
        assert ws.load_dataset().n_obs == 280 - n and ws.original_path.exists()  # undoable


def test_a_sample_too_small_for_doublets_or_integration_is_a_clear_message(ws_root):
    ad = _joined()
    ad.obs["sample"] = ad.obs["sample"].cat.add_categories("tiny")
    ad.obs.iloc[:3, ad.obs.columns.get_loc("sample")] = "tiny"
    ws = _ws_with(ad)
    at = _page(ws.id, "pages/1_data.py")
    assert any("'tiny' (3 cells) is too small to integrate" in md_plain(w.value) for w in at.warning)
    at.button(key="find_doublets").click().run()
    assert not at.exception
    assert any("too small for doublet detection" in md_plain(e.value) for e in at.error)
    assert "predicted_doublet" not in ws.load_dataset().obs
    at = _page(ws.id, "pages/2_cluster.py")
    at.selectbox(key="method_pick").set_value("kmeans").run()
    at.button(key="start").click().run()
    assert any("fewer than 10 cells" in md_plain(e.value) for e in at.error)
    assert ws.list_runs() == []


# --------------------------------------------------------------------------- 4. cluster page
def _wait_finished(at, timeout: float = 150) -> None:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.5)
        at.run()
        if any("finished" in s.value for s in at.success):
            return
    raise AssertionError("the run did not finish")


def test_cluster_page_offers_the_methods_integrations_and_leaves_doublets_out(ws_root):
    ad = _joined()
    ad.obs["predicted_doublet"] = np.arange(ad.n_obs) % 14 == 0  # 20 flagged cells
    ws = _ws_with(ad)
    at = _page(ws.id, "pages/2_cluster.py")
    at.selectbox(key="method_pick").set_value("leiden").run()
    assert at.selectbox(key="integration_leiden").options == ["none", "harmony", "combat", "bbknn"]
    at.selectbox(key="method_pick").set_value("kmeans").run()
    integ = at.selectbox(key="integration_kmeans")
    assert integ.options == ["none", "harmony", "combat"] and integ.value == "harmony"
    assert "Harmony corrects the 50 PCs" in _texts(at)
    integ.set_value("combat").run()
    assert "ComBat corrects the scaled highly variable genes" in _texts(at)
    assert not at.checkbox(key="exclude_doublets").value  # flag only by default
    at.checkbox(key="exclude_doublets").check().run()
    at.button(key="start").click().run()
    _wait_finished(at)
    rec = ws.list_runs()[0]
    assert rec.meta["batch_key"] == "sample" and rec.meta["integration"] == "combat"
    assert rec.meta["excluded_cells"] == {"n": 20, "why": "predicted doublets"}
    assert {"batch_asw", "ilisi", "same_batch_share"} <= set(rec.meta["metrics"])
    labels = ws.run_labels(rec.run_id, ad.n_obs)
    assert labels[ad.obs["predicted_doublet"].to_numpy()].isna().all() and labels.notna().sum() == 260
    table = next(d.value for d in at.dataframe if "batch ASW" in d.value.columns)
    assert table["integration"].iloc[0] == "combat by sample"


def test_deep_methods_say_harmony_runs_on_the_learned_embedding(ws_root):
    from scclust_core.methods import list_methods

    deep = [m for m in list_methods() if m not in ("kmeans", "leiden", "recommend")]
    if not deep:
        pytest.skip("no deep method registered")
    ws = _ws_with(_joined())
    at = _page(ws.id, "pages/2_cluster.py")
    at.selectbox(key="method_pick").set_value(deep[0]).run()
    assert at.selectbox(key=f"integration_{deep[0]}").options == ["none", "harmony"]
    assert "Harmony corrects the learned embedding after training" in _texts(at)


# --------------------------------------------------------------------------- 5. compare, 6. export
@pytest.fixture
def split_run(ws_root):
    """A finished K-means run (integration none) on two samples whose clusters split by sample."""
    ad = _joined()
    ad.obs["cell_type"] = pd.Categorical(np.arange(ad.n_obs) % 3)
    ws = _ws_with(ad)
    job = TrainingJob(ad, "kmeans", kmeans_config(3), runs_root=ws.runs_dir, workspace=ws.id, batch_key="sample",
                      integration="none").start()
    assert job.join(120) and job.status == "completed", job.error
    ws.write_cache(f"{job.run_id}_umap.npy", job.result.full_embedding()[:, :2].astype(np.float32))
    return ws, job.run_id


def test_compare_shows_clusters_by_sample_and_warns_of_a_split_cluster(split_run):
    ws, run_id = split_run
    at = _page(ws.id, "pages/5_compare.py")
    assert not at.error
    warns = [md_plain(w.value) for w in at.warning
             if "a batch effect or a sample-specific population" in md_plain(w.value)]
    assert warns and all(w.startswith("cluster ") and "100% sample 'donor" in w for w in warns)
    assert {"cmp_sample_bar", "cmp_sample_sankey"} <= _chart_keys(at)
    labels = [m.label for m in at.metric]
    assert {"Batch ASW", "iLISI", "Same-sample neighbours"} <= set(labels)
    board = next(d.value for d in at.dataframe if "batch ASW" in d.value.columns)
    assert board["same-sample share"].iloc[0] == "1.000"
    ws.set_edits(run_id, {"1": "T cells"})  # the warning names a renamed cluster by its new name
    at = _page(ws.id, "pages/5_compare.py")
    assert any(md_plain(w.value).startswith("cluster T cells is") for w in at.warning), [w.value for w in at.warning]


def _chart_keys(at) -> set[str]:
    """The keys of the page's plotly charts (AppTest shows them as unknown elements holding their id)."""
    keys = set()
    for el in at.get("plotly_chart"):
        ident = getattr(el.proto, "id", "") or ""
        for k in ("cmp_sample_bar", "cmp_sample_sankey", "cmp_sankey", "cmp_cont", "qc_hist"):
            if k in ident:
                keys.add(k)
    return keys


def test_export_keeps_samples_doublets_and_the_integration(split_run):
    ws, run_id = split_run
    ad = ws.load_dataset()
    ad.obs["predicted_doublet"] = False
    ad.obs["doublet_score"] = np.float32(0.1)
    ws.update_dataset(ad)
    at = _page(ws.id, "pages/6_export.py")
    at.button(key="exp_build").click().run()
    assert not at.exception and not at.error
    back = anndata.read_h5ad(io.BytesIO(at.session_state["_export_h5ad"][2]))
    assert {"sample", "predicted_doublet", "doublet_score"} <= set(back.obs)
    key = back.uns["scclust"]["runs"]
    integ = next(iter(key.values()))["integration"]
    assert integ["batch_key"] == "sample" and integ["method"] == "none"
    assert back.uns["scclust"]["batch_key"] == "sample"
    assert all(np.asarray(back.obsm[k]).shape[1] == 2 for k in back.obsm if k.startswith("X_"))
    table = at.session_state["_export_h5ad"][3]
    assert "obs['sample']" in set(table["key"]) and "obs['predicted_doublet']" in set(table["key"])
