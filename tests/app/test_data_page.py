"""Data page: the reader's choices are shown, and a table whose orientation is unclear is confirmed by the user."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from helpers import md_plain
from streamlit.testing.v1 import AppTest

from scclust_core import io as scio
from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _texts(at) -> str:
    """What the page shows (data-derived text is Markdown-escaped in the source)."""
    return md_plain(" ".join(str(e.value) for kind in (at.markdown, at.info, at.success, at.warning, at.caption,
                                                       at.error) for e in kind))


def _data_page(ws_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws_id
    at.run()
    at.switch_page("pages/1_data.py").run()
    return at


def test_read_notes_are_shown(ws_root, tiny):
    table = pd.DataFrame(tiny.X.toarray().T.astype(int), index=tiny.var_names, columns=tiny.obs_names)
    adata = scio.read(table.to_csv().encode(), filename="genes_by_cells.csv")
    ws = Workspace.open(None)
    ws.set_dataset(adata, "genes_by_cells.csv")
    at = _data_page(ws.id)
    assert not at.exception
    text = _texts(at)
    assert "How genes_by_cells.csv was read" in text
    assert "rows read as genes (table transposed to cells × genes) because" in text


def test_unclear_orientation_is_confirmed_with_a_preview(ws_root):
    rng = np.random.default_rng(0)
    values = rng.poisson(3, (30, 30))
    table = pd.DataFrame(values, index=[f"r{i}" for i in range(30)], columns=[f"c{j}" for j in range(30)])
    data = table.to_csv().encode()
    try:
        scio.read(data, filename="square.csv")
    except scio.OrientationUnclearError as exc:
        pending = {"name": "square.csv", "data": data, "message": str(exc), "preview": exc.preview}
    ws = Workspace.create()
    ws.dir.mkdir(parents=True)  # an existing workspace (ids naming none on disk are never adopted)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.run()
    at.switch_page("pages/1_data.py")
    at.session_state["_orient_pending"] = pending
    at.run()
    assert not at.exception
    assert "are the rows cells or genes?" in _texts(at)
    assert at.button(key="orient_go").disabled  # no silent default: the user must choose
    at.radio(key="orient_choice").set_value("a gene (columns are cells)").run()
    at.button(key="orient_go").click().run()
    assert not at.exception
    loaded = Workspace.open(ws.id).load_dataset()
    np.testing.assert_array_equal(np.asarray(loaded.X.todense() if hasattr(loaded.X, "todense") else loaded.X),
                                  values.T)
    assert "because transpose=True was given" in _texts(at)


def test_table_options_let_the_user_say_the_first_row_names_the_columns(ws_root):
    """Numeric column names (Entrez ids) are a header only when the user says so: the option is on the page."""
    ws = Workspace.create()
    ws.dir.mkdir(parents=True)
    at = _data_page(ws.id)
    assert not at.exception
    assert at.radio(key="header_row").options == ["auto", "names the columns", "is data"]
    table = "g," + ",".join(str(i) for i in range(1, 31)) + "\n" + "\n".join(
        f"c{r}," + ",".join(str((r * j) % 7) for j in range(1, 31)) for r in range(40))
    got = scio.read(table.encode(), filename="entrez.csv", transpose=False, header=True)
    assert list(got.var_names[:3]) == ["1", "2", "3"]
