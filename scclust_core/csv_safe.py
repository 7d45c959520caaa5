"""CSV that is safe to open in a spreadsheet: text cells that would start a formula are neutralised.

Gene names, cell barcodes, annotation categories and file names come from the uploaded data. A cell such as
``=HYPERLINK("http://…")``, ``=cmd|' /C calc'!A0``, ``+SUM(1,2)``, ``-2+3`` or ``@SUM(1,1)`` in a CSV the app
offers would be evaluated by Excel, LibreOffice or Google Sheets when the user opens the download ("CSV
injection"). Following OWASP, every *text* cell, column header and index label that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return (and the full-width ``＝ ＋ － ＠``, which some spreadsheets also accept)
gets a leading single quote ``'``; the spreadsheet then shows it as text. Numbers are never touched (a log fold
change of -1.5 stays the number -1.5), nor missing values.

Every CSV offered for download goes through :func:`safe_csv` / :func:`to_safe_csv` (tests check it). Files the app
writes for itself (run directories, caches read back with pandas) stay verbatim, and so does the .h5ad export.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["FORMULA_TRIGGERS", "neutralise", "safe_frame", "to_safe_csv", "safe_csv"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection"), plus full-width forms.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is a string that starts like a formula; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def _is_text_like(dtype) -> bool:
    return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
                or pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype))


def _safe_index(idx: pd.Index) -> pd.Index:
    if isinstance(idx, pd.MultiIndex):
        return pd.MultiIndex.from_tuples([tuple(neutralise(v) for v in t) for t in idx],
                                         names=[neutralise(n) for n in idx.names])
    name = neutralise(idx.name)
    if not _is_text_like(idx.dtype):
        return idx.rename(name)
    return pd.Index([neutralise(v) for v in idx], name=name, dtype=object)


def safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells, column names and index labels cannot start a spreadsheet formula."""
    out = df.copy()
    out.columns = pd.RangeIndex(df.shape[1])  # positional while rewriting (column names may repeat)
    for j in range(df.shape[1]):
        col = out[j]
        if _is_text_like(col.dtype):
            out[j] = col.astype(object).map(neutralise)
    out.columns = _safe_index(df.columns)
    out.index = _safe_index(df.index)
    return out


def to_safe_csv(df: pd.DataFrame, *, index: bool = False, **kwargs) -> str:
    """``df`` as CSV text, neutralised by :func:`safe_frame` (``kwargs`` go to ``DataFrame.to_csv``)."""
    if kwargs.get("path_or_buf") is not None:
        raise TypeError("to_safe_csv returns the text; write it yourself")
    # RFC 4180 line ends: the csv writer then quotes every field holding a CR or LF. With "\n" it leaves a bare
    # CR unquoted, which spreadsheets read as a new row, so "x\r=cmd|…" would start a row with a formula.
    kwargs.setdefault("lineterminator", "\r\n")
    return safe_frame(df).to_csv(index=index, **kwargs)


def safe_csv(df: pd.DataFrame, *, index: bool = False, **kwargs) -> bytes:
    """``df`` as UTF-8 CSV bytes for ``st.download_button``, neutralised by :func:`safe_frame`."""
    return to_safe_csv(df, index=index, **kwargs).encode("utf-8")
