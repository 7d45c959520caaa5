"""Spreadsheet-safe CSV downloads: the helper neutralises formula-like text cells, and every CSV the app offers
goes through it (an AST check of the UI code; tests/app/test_hostile_text.py checks the real downloads)."""
from __future__ import annotations

import ast
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scclust_core import export
from scclust_core.csv_safe import FORMULA_TRIGGERS, neutralise, safe_csv, safe_frame, to_safe_csv

ROOT = Path(__file__).resolve().parents[1]
UI_FILES = sorted((ROOT / "scclust_core" / "ui").glob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [
    ROOT / "app.py"]
HOSTILE = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@SUM(1,1)", '=HYPERLINK("http://x.test/a","x")', "\tTAB",
           "\rCR", "\uff1dSUM(1,1)"]


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_spreadsheet_safe(text: str) -> list[list[str]]:
    """Every field of the CSV ``text`` either cannot start a formula or is a plain number."""
    rows = _rows(text)
    for row in rows:
        for cell in row:
            if cell.startswith(FORMULA_TRIGGERS):
                float(cell)  # raises for a text cell that a spreadsheet would evaluate
    return rows


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_like_text_gets_a_quote(value):
    assert neutralise(value) == "'" + value


@pytest.mark.parametrize("value", ["gene1", "CD3E", "'=already", " =space", "a=b", "", "1-2"])
def test_other_text_is_unchanged(value):
    assert neutralise(value) == value


@pytest.mark.parametrize("value", [-1.5, -3, np.float32(-0.25), np.int64(-2), None, np.nan, True])
def test_non_text_is_unchanged(value):
    assert neutralise(value) is value


def test_frame_cells_headers_and_index_are_neutralised_numbers_stay_numbers():
    df = pd.DataFrame({"gene": HOSTILE, "logfoldchange": np.linspace(-1.5, 2.0, len(HOSTILE)),
                       "cluster": pd.Categorical(["-1", "=x"] * (len(HOSTILE) // 2)),
                       "n": np.arange(len(HOSTILE)) - 3, "flag": [True, False] * (len(HOSTILE) // 2)},
                      index=pd.Index(["@i"] * len(HOSTILE), name="-idx"))
    df = df.rename(columns={"n": "=n"})
    before = df.copy()
    out = safe_frame(df)
    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    assert list(out["gene"]) == ["'" + v for v in HOSTILE]
    assert list(out.columns) == ["gene", "logfoldchange", "cluster", "'=n", "flag"]
    assert out.index.name == "'-idx" and set(out.index) == {"'@i"}
    assert list(out["cluster"])[:2] == ["'-1", "'=x"]
    for col in ("logfoldchange", "'=n", "flag"):
        np.testing.assert_array_equal(out[col].to_numpy(), df[col.strip("'")].to_numpy())

    text = to_safe_csv(df)
    rows = assert_spreadsheet_safe(text)
    assert rows[0] == ["gene", "logfoldchange", "cluster", "'=n", "flag"]
    assert rows[1][:2] == ["'=cmd|' /C calc'!A0", "-1.5"]  # the negative number is written as a number
    assert [r[0] for r in rows[1:]] == ["'" + v for v in HOSTILE]  # a CR inside a field does not split the row
    assert len(rows) == len(HOSTILE) + 1
    back = pd.read_csv(io.StringIO(text, newline=""))
    assert back["logfoldchange"].dtype.kind == "f" and back["logfoldchange"].iloc[0] == -1.5

    with_index = _rows(to_safe_csv(df, index=True))
    assert with_index[0][0] == "'-idx" and with_index[1][0] == "'@i"
    assert safe_csv(df) == text.encode("utf-8")


def test_duplicate_columns_multiindex_and_empty_frames():
    df = pd.DataFrame([["=a", "+b"], ["c", -1.0]], columns=["x", "x"])
    assert _rows(to_safe_csv(df)) == [["x", "x"], ["'=a", "'+b"], ["c", "-1.0"]]
    mi = pd.DataFrame({"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("=a", 1), ("b", 2)], names=["@k", "n"]))
    assert _rows(to_safe_csv(mi, index=True))[:2] == [["'@k", "n", "v"], ["'=a", "1", "1"]]
    assert to_safe_csv(pd.DataFrame({"a": []})).strip() == "a"
    assert to_safe_csv(pd.DataFrame()).strip() in ("", '""')


def test_labels_csv_is_spreadsheet_safe():
    text = export.labels_csv(HOSTILE, [export.RunExport(key="kmeans_abc", labels=pd.Series(["=x", "B"] * 4))])
    rows = assert_spreadsheet_safe(text)
    assert rows[0] == ["cell", "kmeans_abc"] and rows[1] == ["'=cmd|' /C calc'!A0", "'=x"]
    assert len(rows) == len(HOSTILE) + 1


# --- every CSV the UI offers goes through the helper ---------------------------------------------------------

SAFE_PRODUCERS = {"safe_csv", "to_safe_csv", "labels_csv"}  # labels_csv uses to_safe_csv (tested above)


def _strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _download_calls():
    for path in UI_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "download_button":
                yield path, node


def test_every_csv_download_button_uses_the_helper():
    found = 0
    for path, call in _download_calls():
        texts = [s for a in call.args[2:] for s in _strings(a)] + [s for k in call.keywords if k.arg != "data"
                                                                   for s in _strings(k.value)]
        if not any(".csv" in s or s == "text/csv" for s in texts):
            continue
        found += 1
        data = call.args[1] if len(call.args) > 1 else next(k.value for k in call.keywords if k.arg == "data")
        name = None
        if isinstance(data, ast.Call):
            name = data.func.attr if isinstance(data.func, ast.Attribute) else getattr(data.func, "id", None)
        assert name in SAFE_PRODUCERS, f"{path.name}:{call.lineno}: a CSV download not made by safe_csv"
    assert found >= 4  # markers, selected cells, leaderboard, labels


def test_no_to_csv_in_the_ui_bypasses_the_helper():
    """A ``to_csv(`` in the UI is only allowed for files the app reads back itself, marked on its line."""
    for path in UI_FILES:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if "to_csv(" in line:
                assert "csv-safe: not offered" in line, f"{path.name}:{no}: use scclust_core.csv_safe.safe_csv"


def test_every_table_shown_goes_through_show_table():
    """st.dataframe's toolbar offers each table as a CSV: only ``common.show_table`` (a safe copy) may call it."""
    for path in UI_FILES:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if "st.dataframe(" in line:
                assert path.name == "common.py", f"{path.name}:{no}: show tables with common.show_table"


def test_show_table_hands_streamlit_a_safe_copy(monkeypatch):
    from scclust_core.ui import common

    seen = {}
    monkeypatch.setattr(common.st, "dataframe", lambda df, **kw: seen.setdefault("df", df))
    common.show_table(pd.DataFrame({"gene": ["=cmd|' /C calc'!A0", "CD3E"], "lfc": [-1.5, 2.0]}))
    assert seen["df"]["gene"].tolist() == ["'=cmd|' /C calc'!A0", "CD3E"] and seen["df"]["lfc"].tolist() == [-1.5, 2.0]
