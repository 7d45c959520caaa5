"""Read, validate, describe and write single-cell count data (one module per concern, as anndata's ``_io``).

Uploads come from users, so every reader validates what it gets and turns parser failures into a
``ValueError`` that says what is wrong *and* what to do about it; the UI can show the message verbatim.
Nothing is ever unpickled or executed: h5ad files are read with anndata (no pickled objects), archives are
unpacked member by member with path-traversal checks, tables are parsed as plain text. Sizes a file
declares are checked against a memory budget (:mod:`.budget`) before anything is allocated, and every
choice made while reading (orientation, names, layer used) is kept in ``uns['scclust_read']``.

Supported inputs (detected by content, checked against the extension):

* ``.h5ad`` (AnnData), 10x Genomics HDF5 ``.h5`` (CellRanger v2/v3),
* a 10x matrix folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``,
  ``barcodes.tsv[.gz]``) given as a directory, a ``.zip`` or a ``.tar[.gz]``/``.tgz`` (nested folders ok),
* a CSV/TSV/TXT count table (optionally gzipped) with row names in the first column and a header row.

Modules: :mod:`.detect` (format), :mod:`.archives`, :mod:`.tenx` (10x folders), :mod:`.h5` (h5ad / 10x h5),
:mod:`.tables` and :mod:`.orient` (text tables), :mod:`.validate`, :mod:`.describe`, :mod:`.write`,
:mod:`.budget`, :mod:`.report`, :mod:`.errors`.
"""
from __future__ import annotations

from .archives import MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS
from .budget import memory_budget
from .describe import INTEGER_CHECK_MAX_VALUES, DataSummary, describe, is_integer_counts
from .errors import SUPPORTED_FORMATS_HINT, OrientationUnclearError
from .read import read
from .report import ReadReport, read_report
from .write import dataset_fingerprint, sanitize_uns, write

__all__ = [
    "read",
    "write",
    "describe",
    "DataSummary",
    "is_integer_counts",
    "sanitize_uns",
    "dataset_fingerprint",
    "SUPPORTED_FORMATS_HINT",
    "ReadReport",
    "read_report",
    "OrientationUnclearError",
    "memory_budget",
    "MAX_ARCHIVE_BYTES",
    "MAX_ARCHIVE_MEMBERS",
    "INTEGER_CHECK_MAX_VALUES",
]
