"""CSV/TSV/TXT count tables: layout checked first (separator, header, trailing separators), values parsed in
chunks straight into a sparse matrix, names checked, orientation decided with evidence (:mod:`.orient`).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import orient
from .budget import current_budget, require
from .errors import SUPPORTED_FORMATS_HINT, corrupt, fmt_bytes
from .report import note
from .validate import check_informative

logger = logging.getLogger(__name__)

_SEPS = ("\t", ",", ";", r"\s+")
_SEP_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", r"\s+": "whitespace"}
_HEAD_LINES = 50
_F32_MAX = float(np.finfo(np.float32).max)
#: Pandas keeps per-column parser state and objects: a very wide table costs this much per column.
_PER_COLUMN_BYTES = 2048
#: Values pandas parses at once: large, because it pays per column and per chunk (4× smaller chunks made an
#: 8,000-column table 2× slower), and bounded, because each value of the chunk costs the bytes below.
_CHUNK_VALUES = 1 << 24
#: Peak memory of a table read, measured (RSS sampled every 2 ms around ``read``) on dense-ish Poisson CSVs
#: (58 % non-zero, 2.1 bytes of text per value): 2,000 × 8,000 → +451 MiB, 4,000 × 8,000 → +587 MiB (either
#: orientation, 562–587 MiB), 10 % non-zero → +468 MiB; a tab-separated 2,000 × 2,000 → +93 MiB, the same
#: whitespace-separated (python parser) → +140 MiB. That is ≈ 9 bytes per value kept (the float32 blocks and
#: their stacked, or transposed, copy) plus ≈ 21 bytes per value of the chunk in flight (pandas' tokens, int64
#: columns and their consolidated copy; ≈ 29 with the python parser): 9–14× the text, where the former
#: estimate (2× the text) was 4.5–7× too low (a 57 MB CSV peaked at +583 MB).
_KEPT_BYTES_PER_VALUE = 9
_CHUNK_BYTES_PER_VALUE = {"c": 22, "python": 30}


def _sep_name(sep: str) -> str:
    return _SEP_NAMES.get(sep, repr(sep))


def _fields(line: str, sep: str) -> list[str]:
    if sep == r"\s+":
        return line.split()
    try:
        return next(csv.reader([line], delimiter=sep), [])
    except csv.Error:  # e.g. a field longer than csv's limit: count plainly, pandas reports the rest
        return line.split(sep)


def _head(path: Path, name: str) -> tuple[int, list[str]]:
    """Index of the header line and the first non-empty lines (header first)."""
    lines: list[str] = []
    first = -1
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for i, line in enumerate(fh):
                if line.strip():
                    first = i if first < 0 else first
                    lines.append(line.rstrip("\r\n"))
                    if len(lines) >= _HEAD_LINES:
                        break
    except UnicodeDecodeError:
        raise ValueError(f"The table '{name}' is not UTF-8 text: save it as UTF-8 CSV/TSV, or "
                         f"{SUPPORTED_FORMATS_HINT}") from None
    if not lines:
        raise ValueError(f"The table '{name}' has no content: upload a table with a header row and counts")
    if "\x00" in "".join(lines):
        raise ValueError(f"'{name}' holds binary data, not a text table: {SUPPORTED_FORMATS_HINT}")
    return first, lines


def _layout_ok(lines: list[str], sep: str) -> bool:
    h = len(_fields(lines[0], sep))
    data = [_fields(x, sep) for x in lines[1:]]
    if h < 2 and not all(len(d) < 2 for d in data):
        return False
    return all(len(d) in (h, h + 1) for d in data) and len({len(d) for d in data}) <= 1


def _diagnose(lines: list[str], name: str) -> ValueError:
    """The real cause when no separator gives a consistent table."""
    header, data = lines[0], lines[1:]
    for sep in _SEPS[:3]:
        h = len(_fields(header, sep))
        counts = [len(_fields(x, sep)) for x in data]
        if h >= 2 and counts and all(c == 1 for c in counts):
            other = next((o for o in _SEPS if o != sep and all(len(_fields(x, o)) >= 2 for x in data)), None)
            if other:
                return ValueError(
                    f"Separator mismatch in '{name}': the header row is {_sep_name(sep)}-separated but the data rows "
                    f"are {_sep_name(other)}-separated: save the table with one separator throughout")
        last_empty = [_fields(x, sep)[-1:] == [""] for x in data]
        if h >= 2 and counts and all(last_empty) and len(set(counts)) == 1 and counts[0] in (h + 1, h + 2):
            return ValueError(
                f"Every data row of '{name}' ends with a trailing {_sep_name(sep)} (an empty last field), so rows "
                f"have {counts[0]} fields but the header has {h}: remove the trailing separators and upload again")
    sep = max(_SEPS, key=lambda s: len(_fields(header, s)))
    h = len(_fields(header, sep))
    counts = [len(_fields(x, sep)) for x in data]
    usual = max(set(counts), key=counts.count) if counts else h
    for i, n in enumerate(counts, start=2):
        if n not in (h, h + 1) or n != usual:
            return ValueError(
                f"Row {i} of '{name}' has {n} fields but the header has {h} ({_sep_name(sep)}-separated): every "
                "row needs a name and one value per column; check for missing or extra separators")
    return ValueError(f"The rows of '{name}' have different numbers of fields: save it as a rectangular table")


def choose_sep(lines: list[str], name: str, sep: str | None) -> str:
    """A separator under which the header and the first rows form a rectangular table; else the real cause."""
    if sep is not None:
        if len(_fields(lines[0], sep)) < 2 and len(lines) > 1 and len(_fields(lines[1], sep)) < 2:
            guess = next((s for s in _SEPS if _layout_ok(lines, s) and len(_fields(lines[0], s)) >= 2), None)
            raise ValueError(f"The separator {sep!r} does not occur in '{name}'"
                             + (f"; it looks {_sep_name(guess)}-separated" if guess else "")
                             + ": pass the right separator or leave it to be detected")
        if not _layout_ok(lines, sep):
            raise _diagnose(lines, name)
        return sep
    for cand in _SEPS:
        if len(_fields(lines[0], cand)) >= 2 and _layout_ok(lines, cand):
            return cand
    if all(len(_fields(x, s)) < 2 for x in lines for s in _SEPS):
        raise ValueError(f"The table '{name}' has a single column: it needs row names in the first column, a "
                         "header row, and at least one row and column of counts")
    raise _diagnose(lines, name)


def check_trailing(lines: list[str], sep: str, name: str) -> None:
    """Trailing separators add an empty last field to every row: name that instead of reporting NaN values."""
    data = [_fields(x, sep) for x in lines[1:]]
    if data and all(d[-1:] == [""] for d in data) and len(_fields(lines[0], sep)) >= 2:
        raise ValueError(
            f"Every data row of '{name}' ends with a trailing {_sep_name(sep)} (an empty last field): remove the "
            "trailing separators (or re-export the table) and upload again")


def _numeric_block(frame: pd.DataFrame, name: str, cols: list[str], row0: int) -> np.ndarray:
    """float32 values of one chunk; names the first non-numeric, missing, infinite or too-large value."""
    for pos, dtype in enumerate(frame.dtypes):
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            continue
        series = frame.iloc[:, pos]
        coerced = pd.to_numeric(series, errors="coerce") if not pd.api.types.is_bool_dtype(series) else None
        bad = series.notna() if coerced is None else coerced.isna() & series.notna()
        if bad.any():
            r = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"The table '{name}' has a non-numeric value {series.iloc[r]!r} at row '{frame.index[r]}', column "
                f"'{cols[pos]}': the table must hold only counts apart from the first column (row names) and the "
                "header row")
        frame.isetitem(pos, coerced)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected and reported just below
        values = frame.to_numpy(dtype=np.float32)  # float32 directly: no float64 copy of the chunk
    finite = np.isfinite(values)
    if finite.all():
        return values
    r, c = np.argwhere(~finite)[0]
    original = float(frame.iat[r, c])
    if np.isfinite(original):  # finite in the file, infinite as float32: the value overflows float32
        raise ValueError(
            f"The value {original:g} at row '{frame.index[r]}', column '{cols[c]}' of '{name}' is too large for "
            f"32-bit floats (max {_F32_MAX:.3g}): counts cannot be this large; check the file")
    n_nan = int(np.isnan(values).sum())
    raise ValueError(
        f"The matrix contains {n_nan} NaN (missing) and {int((~finite).sum()) - n_nan} infinite values (first at "
        f"row '{frame.index[r]}', column '{cols[c]}'): counts must be finite numbers; fill missing entries with "
        "0 or remove those rows/columns before uploading")


def _engine(sep: str) -> str:
    return "python" if sep == r"\s+" else "c"


def _chunk_rows(n_values: int) -> int:
    """Rows pandas parses at once: about :data:`_CHUNK_VALUES` values (fewer when the budget is small)."""
    chunk_values = max(1 << 16, min(_CHUNK_VALUES, current_budget() // 32))
    return max(1, min(100_000, chunk_values // max(n_values, 1)))


def parse_peak_bytes(text_bytes: int, lines: list[str], n_header: int, n_cols: int, sep: str) -> float:
    """Peak memory of parsing the table (see :data:`_KEPT_BYTES_PER_VALUE`): rows estimated from the text size
    and the mean length of the first data lines, values kept plus the chunk in flight plus per-column state."""
    data = lines[n_header:] or lines
    mean_line = sum(len(x.encode("utf-8")) + 1 for x in data) / len(data)
    head = sum(len(x.encode("utf-8")) + 1 for x in lines[:n_header])
    n_rows = max(len(data), (text_bytes - head) / max(mean_line, 1.0))
    n_values = n_rows * n_cols
    in_flight = min(n_values, _chunk_rows(n_cols) * n_cols)
    return (_KEPT_BYTES_PER_VALUE * n_values + _CHUNK_BYTES_PER_VALUE[_engine(sep)] * in_flight
            + n_cols * _PER_COLUMN_BYTES)


def _parse(path: Path, name: str, sep: str, skip: int, cols: list[str]):
    """Row names and the matrix (CSR when sparse), parsed in chunks so a sparse table never becomes dense."""
    n_values = len(cols)
    chunk_rows = _chunk_rows(n_values)
    rows: list[str] = []
    blocks = []
    reader = pd.read_csv(path, sep=sep, header=None, skiprows=skip, index_col=0, dtype={0: str},
                         chunksize=chunk_rows, encoding="utf-8-sig",
                         engine=_engine(sep))
    with reader:
        for chunk in reader:
            if chunk.shape[1] != n_values:
                raise ValueError(f"The rows of '{name}' have {chunk.shape[1] + 1} fields where the header implies "
                                 f"{n_values + 1}: check for missing or extra separators")
            values = _numeric_block(chunk, name, cols, len(rows))
            rows.extend(str(x) for x in chunk.index)
            dense = np.count_nonzero(values) >= 0.5 * values.size
            blocks.append(values.astype(np.float32) if dense else sp.csr_matrix(values, dtype=np.float32))
    if not blocks:
        return rows, np.zeros((0, n_values), dtype=np.float32)
    if all(isinstance(b, np.ndarray) for b in blocks):
        return rows, np.vstack(blocks)
    return rows, sp.vstack([sp.csr_matrix(b) for b in blocks], format="csr")


def _columns(lines: list[str], sep: str, header: bool | None) -> tuple[list[str], int]:
    """Value-column names and how many leading lines are the header row (0 when ``header=False``)."""
    if header is False:
        return [f"col{j}" for j in range(1, len(_fields(lines[0], sep)))], 0
    head = _fields(lines[0], sep)
    n_fields = len(_fields(lines[1], sep)) if len(lines) > 1 else len(head)
    return (head[1:] if n_fields == len(head) else head), 1


def read_table(path: Path, name: str, *, transpose: bool | None, sep: str | None,
               header: bool | None = None) -> ad.AnnData:
    """Parse a delimited count table, check names and values, and orient it as cells × genes.

    ``header``: ``True`` the first line names the columns even when it holds numbers (Entrez ids),
    ``False`` there is no header row (columns named ``col1``…), ``None`` a header row whose names are checked.
    """
    skip, lines = _head(path, name)
    sep = choose_sep(lines, name, sep)
    check_trailing(lines, sep, name)
    cols, n_header = _columns(lines, sep, header)
    if len(lines) <= n_header or not cols:
        raise ValueError(f"The table '{name}' has {max(len(lines) - n_header, 0)} data rows and {len(cols)} value "
                         "columns: it needs row names in the first column, a header row, and at least one row and "
                         "column of counts")
    text = path.stat().st_size
    require(parse_peak_bytes(text, lines, n_header, len(cols), sep),
            f"The table '{name}' ({fmt_bytes(text)} of text, {len(cols):,} columns), parsed,")
    try:
        rows, X = _parse(path, name, sep, skip + n_header, cols)
    except ValueError as exc:
        if isinstance(exc, UnicodeDecodeError):
            raise ValueError(f"The table '{name}' is not UTF-8 text: save it as UTF-8 CSV/TSV") from None
        if isinstance(exc, pd.errors.ParserError):
            raise corrupt(f"table '{name}' could not be parsed", exc) from exc
        raise
    except pd.errors.EmptyDataError:
        rows, X = [], np.zeros((0, len(cols)), dtype=np.float32)
    except (csv.Error, pd.errors.ParserError) as exc:
        raise corrupt(f"table '{name}' could not be parsed", exc) from exc
    if not rows:
        raise ValueError(f"The table '{name}' has 0 data rows and {len(cols)} value columns: it needs row names in "
                         "the first column, a header row, and at least one row and column of counts")
    return _orient(X, rows, cols, name, sep, transpose, header)


def _name_notes(rows: list[str], cols: list[str], name: str, sep: str, header: bool | None) -> list[str]:
    """Where the names come from; numeric names refused unless ``header`` says what the first line is."""
    where_cols = {True: "the header row (header=True was given)", False: "their positions (header=False: no "
                  "header row)", None: "the header row"}[header]
    notes = [f"Table: {_sep_name(sep)}-separated; column names from {where_cols}, row names from the first column"]
    header_fix = ("header row", "Add a first row with the column names (cell barcodes or gene names); if these "
                  "numbers are the names (e.g. Entrez gene ids), say so: header=True (CLI: --header yes)")
    checks = [(rows, "first column", ("row-name column",
                                      "Add a first column with the row names (gene names or cell barcodes)."))]
    if header is None:
        checks.insert(0, (cols, "header row", header_fix))
    for names, where, fix in checks:
        extra = orient.check_names(names, where, name, fix)
        if extra:
            notes.append(extra)
    return notes


def _orient(X, rows: list[str], cols: list[str], name: str, sep: str, transpose: bool | None,
            header: bool | None = None) -> ad.AnnData:
    notes = _name_notes(rows, cols, name, sep, header)
    _check_negative(X, rows, cols, name)  # refused either way round: say it before asking about orientation
    if _max_detected(X, 0) < 2 and _max_detected(X, 1) < 2:
        check_informative(X)  # the same failure either way round: say it before asking about orientation
    row_idx, col_idx = pd.Index(rows, dtype=str), pd.Index(cols, dtype=str)
    preview = orient.as_dense_preview(X, row_idx, col_idx)
    rows_are_genes, why = orient.decide(row_idx, col_idx, X, transpose, preview, name)
    for n in notes + why:
        note(n)
    logger.info("Table '%s' (%d×%d): %s", name, X.shape[0], X.shape[1], "; ".join(why))
    if rows_are_genes:
        X = X.T.tocsr() if sp.issparse(X) else np.ascontiguousarray(X.T)
        row_idx, col_idx = col_idx, row_idx
    return ad.AnnData(X=X, obs=pd.DataFrame(index=row_idx), var=pd.DataFrame(index=col_idx))


def _max_detected(X, axis: int) -> int:
    """Largest number of non-zero entries along ``axis`` (0: per column, 1: per row)."""
    if sp.issparse(X):
        counts = np.asarray((X != 0).sum(axis=axis)).ravel()
    else:
        counts = np.count_nonzero(np.asarray(X), axis=axis)
    return int(counts.max()) if counts.size else 0


def _check_negative(X, rows: list[str], cols: list[str], name: str) -> None:
    """Negative values are not counts; name the first by its row and column as written in the table."""
    values = X.data if sp.issparse(X) else X
    if not values.size or values.min() >= 0:
        return
    coo = X.tocoo() if sp.issparse(X) else None
    if coo is not None:
        k = int(np.argmin(coo.data))
        r, c, v = int(coo.row[k]), int(coo.col[k]), float(coo.data[k])
    else:
        r, c = np.unravel_index(int(np.argmin(X)), X.shape)
        v = float(X[r, c])
    raise ValueError(
        f"The table '{name}' contains {int((values < 0).sum())} negative values (e.g. {v:g} at row '{rows[r]}', "
        f"column '{cols[c]}'): counts cannot be negative; upload raw counts, not scaled/centred data")
