"""Hostile names in the data: Markdown in a dataset name, annotation column, categories, gene, cell and cluster
names is shown as text on every page, and every CSV the app offers is spreadsheet-safe."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import FORMULAS, HOSTILE_COLUMN, HOSTILE_DATASET_NAME, MD_IMAGE, hostile_adata, md_plain
from streamlit.testing.v1 import AppTest

from scclust_core.csv_safe import FORMULA_TRIGGERS
from scclust_core.jobs import TrainingJob
from scclust_core.methods import get_method
from scclust_core.ui.common import md_text
from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = ["pages/1_data.py", "pages/2_cluster.py", "pages/3_explore.py", "pages/4_markers.py", "pages/5_compare.py",
         "pages/6_export.py"]
WS_ID = "fedcba9876543210fedcba9876543210"
RENAMES = {"0": '=HYPERLINK("http://127.0.0.1:9/evil-rename","x")', "1": "![r](http://127.0.0.1:9/evil-rename.png)"}
#: Markdown that would render as an image, a link or bold (not preceded by an escaping backslash)
UNSAFE = re.compile(r"(?<!\\)!(?<!\\)\[|(?<!\\)\]\((?:http|javascript|evil)|(?<!\\)\*\*(?:bold|b\b)")
MARKDOWN_TYPES = {"markdown", "caption", "latex", "info", "warning", "error", "success", "title", "header",
                  "subheader", "toast", "exception"}


@pytest.fixture(scope="module")
def _hostile_template(tmp_path_factory):
    from scclust_core import datasets

    root = tmp_path_factory.mktemp("hostile_ws")
    ws = Workspace(WS_ID, root)
    ad = hostile_adata(datasets.synthetic(150, 80, 3, seed=0))
    ws.set_dataset(ad.copy(), HOSTILE_DATASET_NAME)
    ws.set_reference(HOSTILE_COLUMN)
    cfg = get_method("kmeans").Config.from_preset(None, n_clusters=3, n_top_genes=60, n_pcs=10, n_init=2)
    job = TrainingJob(ad, "kmeans", cfg, runs_root=ws.runs_dir, label_key=HOSTILE_COLUMN,
                      workspace=ws.id).start()
    assert job.join(120) and job.status == "completed", job.error
    np.save(ws.cache_dir / f"{job.run_id}_umap.npy", job.result.full_embedding()[:, :2].astype(np.float32))
    ws.set_edits(job.run_id, RENAMES)
    return root, job.run_id


@pytest.fixture
def hostile_ws(_hostile_template, ws_root):
    src, run_id = _hostile_template
    shutil.copytree(src / WS_ID, ws_root / WS_ID)
    return Workspace(WS_ID, ws_root), run_id


@pytest.fixture
def downloads(monkeypatch):
    """file name -> data of every ``st.download_button`` drawn (the real button is still drawn)."""
    import streamlit as st

    got: dict[str, bytes] = {}
    real = st.download_button

    def spy(label, data, file_name=None, *args, **kwargs):
        got[file_name] = data.encode() if isinstance(data, str) else data
        return real(label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", spy)
    return got


def _markdown_sources(at) -> list[tuple[str, str]]:
    """(where, text) of everything the page renders as Markdown: bodies of text elements, every label and tooltip,
    radio options. (Selectbox/multiselect options and dataframes are plain text in Streamlit.)"""
    out: list[tuple[str, str]] = []

    def add(where, value):
        if isinstance(value, str) and value:
            out.append((where, value))

    def walk(node):
        kind = getattr(node, "type", "?")
        if kind in MARKDOWN_TYPES:
            add(kind, getattr(node, "value", None))
        for attr in ("label", "help"):
            try:
                add(f"{kind}.{attr}", getattr(node, attr, None))
            except Exception:  # noqa: BLE001 - some elements compute these from a proto that lacks them
                pass
        if kind == "radio":
            for o in node.options:
                add("radio.option", o)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def test_markdown_in_the_data_is_shown_as_text_on_every_page(hostile_ws):
    ws, run_id = hostile_ws
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ws"] = ws.id
    at.session_state["view_kind"] = "PCA"
    at.run()
    seen: dict[str, list[tuple[str, str]]] = {}
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        sources = _markdown_sources(at)
        bad = [(w, t) for w, t in sources if UNSAFE.search(t)]
        assert not bad, (page, bad)
        seen[page] = sources
    data_page = md_plain(" ".join(t for _, t in seen["pages/1_data.py"]))
    # the hostile strings are there, as text: the dataset name (heading, sidebar), the column, its categories
    assert HOSTILE_DATASET_NAME in data_page and HOSTILE_COLUMN in data_page and MD_IMAGE in data_page
    assert any(md_text(MD_IMAGE) in t for w, t in seen["pages/1_data.py"] if w == "caption")
    assert any(w == "subheader" and t == md_text(HOSTILE_DATASET_NAME) for w, t in seen["pages/1_data.py"])
    cluster = seen["pages/2_cluster.py"]
    assert any(w == "radio.option" and md_plain(t).startswith(f"Same as {HOSTILE_COLUMN}") for w, t in cluster)


def _check_csv(data: bytes) -> list[list[str]]:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    for row in rows:
        for cell in row:
            if cell.startswith(FORMULA_TRIGGERS):
                float(cell)  # only numbers may start with - or +; text that would be a formula has a quote
    return rows


def _selection_script():
    import numpy as np

    from scclust_core.ui import explore_ui, state

    state.init()
    rec = state.runs(finished_only=True)[0]
    explore_ui.selection_panel(rec.run_id, np.arange(12))


def test_every_offered_csv_is_spreadsheet_safe(hostile_ws, downloads):
    ws, run_id = hostile_ws
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["ws"] = ws.id
    at.run()
    for page in ("pages/4_markers.py", "pages/5_compare.py", "pages/6_export.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    sel = AppTest.from_function(_selection_script, default_timeout=120)
    sel.query_params["ws"] = ws.id
    sel.run()
    assert not sel.exception, [e.value for e in sel.exception]

    csvs = {name: data for name, data in downloads.items() if name.endswith(".csv")}
    assert {f"markers_{run_id}.csv", "leaderboard.csv", "selected_cells.csv"} <= set(csvs)
    assert any(name.endswith("_labels.csv") for name in csvs)
    rows = {name: _check_csv(data) for name, data in csvs.items()}

    markers = rows[f"markers_{run_id}.csv"]
    head = markers[0]
    genes = {r[head.index("gene")] for r in markers[1:]}
    assert {"'" + f for f in FORMULAS} <= genes  # every hostile gene is there, quoted
    clusters = {r[head.index("cluster")] for r in markers[1:]}
    assert "'" + RENAMES["0"] in clusters
    lfc = [float(r[head.index("logfoldchange")]) for r in markers[1:]]
    assert min(lfc) < 0  # negative fold changes are still numbers

    cells = [r[0] for r in rows["selected_cells.csv"][1:]]
    assert cells[:7] == ["'" + f for f in FORMULAS] and len(cells) == 12
    labels = next(v for k, v in rows.items() if k.endswith("_labels.csv"))
    assert labels[1][0] == "'" + FORMULAS[0] and len(labels) == 151
    assert "'" + RENAMES["0"] in {r[1] for r in labels[1:]}
    lb = rows["leaderboard.csv"]
    assert lb[0][0] == "run" and lb[1][lb[0].index("reference")] == HOSTILE_COLUMN
