"""The consensus (recommend) views: figure builders, the Cluster page report and Explore's confidence tools."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import workspace_with_run
from streamlit.testing.v1 import AppTest

from scclust_core.methods import get_method
from scclust_core.ui import recommend_ui
from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")
SMALL = dict(hvg_sizes=[40, 80], pcs=[5], n_seeds=2)


def _info(estimated: bool = True) -> dict:
    names = ["leiden r=0.3", "leiden r=0.5", "kmeans K=3 seed 0"]
    return {"candidates": names, "agreement_ari": [[1, .8, .2], [.8, 1, .3], [.2, .3, 1]],
            "mean_agreement": [.5, .55, .25], "ari_with_consensus": [.9, .95, .3], "n_clusters": 3,
            "k_estimated": estimated, "k_evidence": {"k": [2, 3, 4], "lifetime": [.1, .4, .05]} if estimated else {},
            "rule": "average_linkage", "mean_confidence": .8, "most_agreeing": names[:2], "confidence": [1.0] * 5}


def test_figure_builders_show_the_agreement_and_the_estimated_k():
    info = _info()
    heat = recommend_ui.agreement_heatmap(info)
    assert np.asarray(heat.data[0].z).shape == (3, 3) and list(heat.data[0].x) == info["candidates"]
    kev = recommend_ui.k_evidence_figure(info)
    assert list(kev.data[0].x) == [2, 3, 4] and kev.layout.shapes[0].x0 == 3  # the marked K is the argmax
    table = recommend_ui.candidate_table(info)
    assert table["candidate"].tolist() == ["leiden r=0.5", "leiden r=0.3", "kmeans K=3 seed 0"]


def test_selection_table_marks_the_kept_proposal():
    info = {**_info(estimated=False), "rule": "select", "chosen": "average_linkage_top_half",
            "selection": {"average_linkage": 0.61, "average_linkage_top_half": 0.64, "candidate: kmeans K=3 seed 0": 0.5}}
    table = recommend_ui.selection_table(info)
    assert table["proposal"].tolist()[0] == "average_linkage_top_half" and table["kept"].tolist() == [True, False, False]
    assert recommend_ui.selection_table(_info()).empty  # K estimated: nothing was selected


def _recommend_ws(ws_root, tiny, **overrides):
    cfg = get_method("recommend").Config.from_preset(None, **SMALL, **overrides)
    return workspace_with_run(Workspace("5ec0" + "0" * 28, ws_root), tiny, "recommend", cfg, view="pca", timeout=180)


@pytest.fixture
def recommend_ws(ws_root, tiny):
    return _recommend_ws(ws_root, tiny)  # K estimated


def test_cluster_page_says_which_proposal_was_kept_when_k_is_given(ws_root, tiny):
    ws, run_id = _recommend_ws(ws_root, tiny, n_clusters=3)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.run()
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception and not at.error
    chosen = json.loads((ws.runs_dir / run_id / "result.json").read_text())["extras"]["recommend"]["chosen"]
    assert any(f"kept **{chosen}**" in e.label for e in at.expander)


def test_cluster_and_explore_pages_show_the_consensus(recommend_ws):
    ws, run_id = recommend_ws
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.session_state["view_kind"] = "PCA"
    at.run()
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception and not at.error
    texts = " ".join(str(m.value) for m in at.markdown)
    n_cand = len(json.loads((ws.runs_dir / run_id / "result.json").read_text())
                 ["extras"]["recommend"]["candidates"])
    assert f"Consensus of {n_cand} candidate clusterings" in texts and "estimated" in texts
    assert at.selectbox(key="method_pick").options[0].startswith("recommend")
    at.switch_page("pages/3_explore.py").run()
    assert not at.exception and not at.error
    assert "consensus confidence" in at.selectbox(key="colour_by").options
    at.selectbox(key="colour_by").set_value("consensus confidence").run()
    assert not at.exception
    at.checkbox(key=f"lowconf_on_{run_id}").check().run()
    at.slider(key=f"lowconf_thr_{run_id}").set_value(1.0).run()  # every cell is below 1.0 unless fully agreed
    assert not at.exception and not at.error
    stored = json.loads((ws.runs_dir / run_id / "result.json").read_text())
    conf = np.asarray(stored["extras"]["recommend"]["confidence"])  # decides how many cells are selected
    n_low = int((conf < 1.0).sum())
    assert 0 < n_low and any(f"{n_low:,} cells selected" in str(m.value) for m in at.markdown)
