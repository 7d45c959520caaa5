"""Which axis of a table holds cells: decided from evidence, stated as a note, refused when unclear.

Evidence, in order of trust:

* **names** — barcode-like (``[ACGT]{8,}``) or ``cell…``/``barcode…`` names mark cells; Ensembl ids,
  ``gene…`` names, mitochondrial (``MT-``) and ribosomal (``RPL``/``RPS``) genes and a few ubiquitous
  housekeeping genes mark genes;
* **totals** — gene totals spread over several orders of magnitude, cell totals (library sizes) over about
  one: the axis whose line sums have the wider spread of ``log10(1 + sum)`` holds genes.

Names decide when they clearly point one way and the totals do not contradict them; the totals alone decide
only when they are unambiguous. Otherwise :class:`OrientationUnclearError` asks for ``transpose=``: a
table read on the wrong axis gives clusters of genes that look like a perfectly good result.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import OrientationUnclearError

_BARCODE_RE = re.compile(r"[ACGT]{8,}")
_CELL_PREFIX_RE = re.compile(r"^(?:cell|barcode|bc|sample)[_\-.]?\d", re.IGNORECASE)
_GENE_ID_RE = re.compile(r"^(?:ENS[A-Z]*G\d{6,}|gene[_\-.]?\d)", re.IGNORECASE)
_GENE_MARKER_RE = re.compile(
    r"^(?:MT-[A-Z0-9]+|RP[LS]\d+[A-Z]?\d*|ACTB|GAPDH|MALAT1|B2M|TMSB4X|EEF1A1|TPT1|FTL|FTH1|UBC|HSP90AB1)$",
    re.IGNORECASE,
)
#: Names must differ by this much (score units) to count as evidence.
NAME_MARGIN = 0.25
#: Totals decide alone only when the spreads differ by this much (log10 units) and by this factor.
SPREAD_DIFF, SPREAD_RATIO = 0.4, 2.0
#: Totals contradict names when the spreads differ the other way by this much.
CONTRADICT_DIFF, CONTRADICT_RATIO = 0.3, 1.6


def _sample(names: pd.Index) -> pd.Series:
    s = pd.Series(np.asarray(names, dtype=str))
    return s.iloc[np.linspace(0, len(s) - 1, 5000).astype(int)] if len(s) > 5000 else s


def name_scores(names: pd.Index) -> tuple[float, float, str]:
    """(cell-likeness, gene-likeness, example) of a set of names, each in [0, 1]."""
    s = _sample(names)
    is_cell = s.str.contains(_BARCODE_RE) | s.str.contains(_CELL_PREFIX_RE)
    is_gene_id = s.str.contains(_GENE_ID_RE)
    markers = s[s.str.fullmatch(_GENE_MARKER_RE)]
    gene = min(1.0, float(is_gene_id.mean()) + (0.5 if markers.nunique() >= 2 else 0.0))
    example = (s[is_cell].iloc[0] if is_cell.any() else markers.iloc[0] if len(markers)
               else s[is_gene_id].iloc[0] if is_gene_id.any() else s.iloc[0])
    return float(is_cell.mean()), gene, str(example)


def _spread(sums: np.ndarray) -> float | None:
    return float(np.std(np.log10(1.0 + np.maximum(sums, 0)))) if sums.size >= 10 else None


def totals_spread(X) -> tuple[float | None, float | None]:
    """Spread of log10(1 + line sums) over rows and over columns (``None`` with fewer than 10 lines)."""
    rs = np.asarray(X.sum(axis=1)).ravel()
    cs = np.asarray(X.sum(axis=0)).ravel()
    return _spread(rs), _spread(cs)


def _describe(names: pd.Index, cell: float, gene: float, example: str) -> str:
    if cell >= 0.5:
        return f"{cell:.0%} look like cell barcodes/ids (e.g. '{example}')"
    if gene >= 0.5:
        return f"they look like genes (e.g. '{example}')"
    return f"no clue (e.g. '{str(names[0]) if len(names) else ''}')"


def _verdict(rows_are_genes: bool) -> str:
    return "rows read as genes (table transposed to cells × genes)" if rows_are_genes else "rows read as cells"


def decide(rows: pd.Index, cols: pd.Index, X, transpose: bool | None, preview: pd.DataFrame | None,
           name: str) -> tuple[bool, list[str]]:
    """Return ``(rows_are_genes, notes)``; raise :class:`OrientationUnclearError` when the evidence is weak."""
    rc, rg, rex = name_scores(rows)
    cc, cg, cex = name_scores(cols)
    margin = (cc - rc) + (rg - cg)  # > 0: rows are genes
    names_text = (f"row names: {_describe(rows, rc, rg, rex)}; column names: {_describe(cols, cc, cg, cex)}")
    sr, scl = totals_spread(X)
    spread_vote, spread_text = 0, "totals: too few rows or columns to compare"
    if sr is not None and scl is not None:
        hi, lo = max(sr, scl), min(sr, scl)
        ratio = hi / max(lo, 1e-9)
        spread_text = (f"totals: log10 row sums spread {sr:.2f}, column sums {scl:.2f} "
                       "(gene totals spread wider than cell totals)")
        if hi - lo >= SPREAD_DIFF and ratio >= SPREAD_RATIO:
            spread_vote = 2 if sr > scl else -2
        elif hi - lo >= CONTRADICT_DIFF and ratio >= CONTRADICT_RATIO:
            spread_vote = 1 if sr > scl else -1
    evidence = [names_text, spread_text]
    if transpose is not None:
        notes = [f"{_verdict(bool(transpose))} because transpose={bool(transpose)} was given"]
        implied = 1 if margin >= NAME_MARGIN else -1 if margin <= -NAME_MARGIN else \
            (1 if spread_vote == 2 else -1 if spread_vote == -2 else 0)
        if implied and (implied > 0) != bool(transpose):
            notes.append(f"Note: the table's content suggests the other orientation ({names_text}; {spread_text})")
        return bool(transpose), notes
    if abs(margin) >= NAME_MARGIN:
        by_names = margin > 0
        if spread_vote and (spread_vote > 0) != by_names:
            raise _unclear(name, "the names and the totals disagree", evidence, preview)
        return by_names, [f"{_verdict(by_names)} because the names say so ({names_text})"
                          + (f"; {spread_text} agree" if spread_vote else "")]
    if abs(spread_vote) == 2:
        by_totals = spread_vote > 0
        return by_totals, [f"{_verdict(by_totals)} because {'row' if by_totals else 'column'} totals spread over "
                           f"far more orders of magnitude, as gene totals do ({spread_text}); names gave no clue"]
    raise _unclear(name, "neither the names nor the totals tell which axis holds cells", evidence, preview)


def _unclear(name: str, why: str, evidence: list[str], preview) -> OrientationUnclearError:
    return OrientationUnclearError(
        f"Cannot tell whether the rows of '{name}' are cells or genes: {why} ({'; '.join(evidence)}). "
        "Say which: transpose=False if rows are cells, transpose=True if rows are genes "
        "(app: 'Rows of the table are'; CLI: --transpose false/true)",
        preview=preview, evidence=evidence,
    )


def check_names(names: list[str], where: str, name: str, fix: str) -> str | None:
    """Refuse numeric "names" (a header row or name column that is really counts); a plain 0…n−1 or 1…n
    index is accepted with a note (returned)."""
    s = pd.Series(names, dtype=str)
    if s.empty:
        return None
    num = pd.to_numeric(s.str.strip(), errors="coerce")
    if num.notna().mean() < 0.9:
        return None
    v = num.dropna().to_numpy(dtype=float)
    if len(v) == len(s) and np.all(v == np.round(v)) and v.min() in (0.0, 1.0) \
            and np.array_equal(v, np.arange(v.min(), v.min() + len(v))):
        return f"The {where} holds only positions {int(v.min())}…{int(v.max())}, not names: they are used as names"
    shown = ", ".join(repr(x) for x in s.head(4))
    raise ValueError(
        f"The {where} of '{name}' holds numbers ({shown}, …), not names: it looks like counts, so the table "
        f"probably has no {fix[0]}. {fix[1]}"
    )


def as_dense_preview(X, rows, cols, n: int = 6) -> pd.DataFrame:
    block = X[:n, :n]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return pd.DataFrame(block, index=list(rows[:n]), columns=list(cols[:n]))
