"""One test per class of issue 14 (data in): nothing read silently wrong, no resource bomb, real-cause messages."""
from __future__ import annotations

import gzip
import io as pyio
import zipfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scclust_core import datasets
from scclust_core import io as scio
from scclust_core.io import budget, tables


@pytest.fixture(scope="module")
def small() -> ad.AnnData:
    return datasets.synthetic(n_cells=40, n_genes=30, n_clusters=2, seed=3, mito_genes=3)


def _csv(frame: pd.DataFrame, **kw) -> bytes:
    return frame.to_csv(**kw).encode()


def _realistic_genes_by_cells(seed: int = 0) -> pd.DataFrame:
    """Counts with gene totals over several decades and similar library sizes, names that say nothing."""
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0, 2, size=200)[:, None] * rng.uniform(0.5, 1.5, size=60)[None, :]
    return pd.DataFrame(rng.poisson(mu), index=[f"r{i}" for i in range(200)], columns=[f"c{j}" for j in range(60)])


# ------------------------------------------------------------------------------------------------
# class 1: orientation and names are decided with evidence, shown, or asked for
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("genes_in_rows", [True, False])
def test_orientation_from_totals_is_stated(genes_in_rows):
    frame = _realistic_genes_by_cells()
    got = scio.read(_csv(frame if genes_in_rows else frame.T), filename="t.csv")
    assert got.shape == (60, 200)
    assert list(got.obs_names[:2]) == ["c0", "c1"]
    notes = " ".join(scio.read_report(got).notes)
    assert ("rows read as genes" if genes_in_rows else "rows read as cells") in notes and "totals spread" in notes


def test_orientation_from_names_is_stated(small):
    frame = pd.DataFrame(small.X.toarray().astype(int).T, index=small.var_names, columns=small.obs_names)
    got = scio.read(_csv(frame), filename="t.csv")
    assert got.shape == (40, 30)
    assert "rows read as genes (table transposed to cells × genes) because the names say so" in \
        scio.read_report(got).notes[-1]


def test_square_table_without_evidence_asks():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.poisson(3, (40, 40)), index=[f"r{i}" for i in range(40)],
                         columns=[f"c{j}" for j in range(40)])
    with pytest.raises(scio.OrientationUnclearError, match="transpose=False if rows are cells") as info:
        scio.read(_csv(frame), filename="sq.csv")
    assert isinstance(info.value, ValueError) and info.value.preview.shape == (6, 6)
    assert info.value.evidence and "r0" in info.value.preview.index


def test_names_and_totals_disagree_asks(small):
    frame = _realistic_genes_by_cells()
    frame.index = [f"cell{i}" for i in range(200)]  # cell-like names on the axis whose totals look like genes
    frame.columns = [f"ENSG{j:011d}" for j in range(60)]
    with pytest.raises(scio.OrientationUnclearError, match="disagree"):
        scio.read(_csv(frame), filename="t.csv")


def test_explicit_transpose_against_evidence_is_noted(small):
    frame = pd.DataFrame(small.X.toarray().astype(int), index=small.obs_names, columns=small.var_names)
    got = scio.read(_csv(frame), filename="t.csv", transpose=True)
    notes = scio.read_report(got).notes
    assert got.shape == (30, 40) and any("suggests the other orientation" in n for n in notes)


@pytest.mark.parametrize("kw,where", [({"index": False}, "first column"), ({"header": False}, "header row")])
def test_numeric_names_are_refused(kw, where):
    frame = _realistic_genes_by_cells()
    with pytest.raises(ValueError, match=f"The {where} of 't.csv' holds numbers .* looks like counts"):
        scio.read(_csv(frame, **kw), filename="t.csv")


def test_positional_names_are_accepted_with_a_note():
    frame = _realistic_genes_by_cells()
    frame.index, frame.columns = range(200), range(60)
    got = scio.read(_csv(frame), filename="t.csv")
    assert any("holds only positions 0…59" in n for n in scio.read_report(got).notes)


def test_read_report_survives_h5ad_roundtrip(small, tmp_path):
    frame = pd.DataFrame(small.X.toarray().astype(int), index=small.obs_names, columns=small.var_names)
    got = scio.read(_csv(frame), filename="t.csv")
    back = ad.read_h5ad(scio.write(got, tmp_path / "w.h5ad"))  # the workspace stores datasets this way
    assert scio.read_report(back).notes == scio.read_report(got).notes
    assert scio.read_report(back).format == "text table"


def test_h5ad_without_x_says_which_layer(small, tmp_path):
    a = small.copy()
    a.layers["counts"] = a.X.copy()
    a.X = None
    a.write_h5ad(tmp_path / "nox.h5ad")
    got = scio.read(tmp_path / "nox.h5ad")
    assert "layers['counts'] is used as the expression matrix" in scio.read_report(got).notes[0]


# ------------------------------------------------------------------------------------------------
# class 5: declared sizes checked against the budget before allocating; MemoryError/OSError → ValueError
# ------------------------------------------------------------------------------------------------


def test_h5ad_declaring_huge_dense_x_is_refused_before_reading(small, tmp_path):
    path = tmp_path / "big.h5ad"
    small.write_h5ad(path)
    with h5py.File(path, "a") as f:
        del f["X"]
        f.create_dataset("X", shape=(50_000, 50_000), dtype="f4", chunks=(1000, 1000), compression="gzip")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match=r"declares 9\.3 GiB of arrays \(largest: 'X'\).*more than the 1\.0 GiB"):
        scio.read(path, max_bytes=1024**3)


def _mtx_zip(header: str, body: str, n_feat: int, n_bc: int) -> bytes:
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("matrix.mtx", header + body)
        zf.writestr("features.tsv", "".join(f"g{i}\tG{i}\n" for i in range(n_feat)))
        zf.writestr("barcodes.tsv", "".join(f"b{i}\n" for i in range(n_bc)))
    return buf.getvalue()


def test_mtx_header_bombs_are_refused():
    head = "%%MatrixMarket matrix coordinate integer general\n"
    with pytest.raises(ValueError, match="2000000000×2000000000 but there are 2 features"):
        scio.read(_mtx_zip(head + "2000000000 2000000000 5\n", "1 1 1\n", 2, 2), filename="m.zip")
    with pytest.raises(ValueError, match="declares 50,000 entries but holds only"):
        scio.read(_mtx_zip(head + "300 200 50000\n", "1 1 1\n", 300, 200), filename="m.zip")
    dense = "%%MatrixMarket matrix array integer general\n300 200\n"
    with pytest.raises(ValueError, match="declares a dense 300 × 200 matrix; reading it would need"):
        scio.read(_mtx_zip(dense, "1\n", 300, 200), filename="m.zip", max_bytes=100_000)


def test_gzip_bomb_is_stopped_at_the_cap():
    bomb = gzip.compress(b"gene,c1\n" + b"g,0\n" * 2_000_000)  # ~8 MB of text from a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="unpacks to more than 1.0 MiB"):
        scio.read(bomb, filename="x.csv.gz", max_bytes=1024**2)


def test_wide_table_is_refused_by_the_budget():
    wide = b"gene," + b",".join(b"c%d" % i for i in range(200_000)) + b"\nMT-CO1," + b"1," * 199_999 + b"1\n"
    with pytest.raises(ValueError, match="200,000 columns.*more than the"):
        scio.read(wide, filename="w.csv", max_bytes=64 * 1024**2)


def test_zip_with_many_members_is_refused():
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(scio.MAX_ARCHIVE_MEMBERS + 1):
            zf.writestr(f"f{i}", b"")
    with pytest.raises(ValueError, match="more than 10,000 members"):
        scio.read(buf.getvalue(), filename="many.zip")


def test_memory_and_os_errors_become_value_errors(small, monkeypatch):
    text = _csv(pd.DataFrame(small.X.toarray(), index=small.obs_names, columns=small.var_names))
    for exc, word in ((MemoryError(), "Not enough memory to read 't.csv'"), (OSError(28, "No space left"),
                                                                             "No space left")):
        def fail(*a, _e=exc, **k):
            raise _e

        monkeypatch.setattr(tables, "read_table", fail)
        with pytest.raises(ValueError, match=word) as info:
            scio.read(text, filename="t.csv")
        assert "bytes" in str(info.value) or "KiB" in str(info.value)


def test_budget_from_env(monkeypatch):
    monkeypatch.setenv("SCCLUST_MAX_BYTES", "2G")
    assert scio.memory_budget() == 2 * 1024**3
    monkeypatch.setenv("SCCLUST_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="SCCLUST_MAX_BYTES='lots' is not a size"):
        scio.memory_budget()
    monkeypatch.delenv("SCCLUST_MAX_BYTES")
    assert 0 < scio.memory_budget() <= budget.available_memory()


# ------------------------------------------------------------------------------------------------
# class 6: messages name the real cause
# ------------------------------------------------------------------------------------------------


def _lines(small) -> list[str]:
    frame = pd.DataFrame(small.X.toarray().astype(int), index=small.obs_names, columns=small.var_names)
    return frame.to_csv().splitlines()


def test_separator_mismatch_is_named(small):
    lines = _lines(small)
    text = "\n".join([lines[0]] + [x.replace(",", ";") for x in lines[1:]])
    with pytest.raises(ValueError, match="header row is comma-separated but the data rows are semicolon"):
        scio.read(text.encode(), filename="t.csv")


@pytest.mark.parametrize("header_too", [False, True])
def test_trailing_commas_are_named(small, header_too):
    lines = _lines(small)
    text = "\n".join([lines[0] + ("," if header_too else "")] + [x + "," for x in lines[1:]])
    with pytest.raises(ValueError, match="ends with a trailing comma"):
        scio.read(text.encode(), filename="t.csv")


def test_negative_table_is_refused_before_any_orientation_question():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(30, 30)), index=[f"r{i}" for i in range(30)],
                         columns=[f"c{j}" for j in range(30)])  # z-scores, square, names say nothing
    with pytest.raises(ValueError, match=r"negative values \(e\.g\. .* at row 'r\d+', column 'c\d+'\)"):
        scio.read(_csv(frame), filename="z.csv")


def test_ragged_row_is_named(small):
    lines = _lines(small)
    lines[5] += ",7"
    with pytest.raises(ValueError, match="Row 6 of 't.csv' has 32 fields but the header has 31"):
        scio.read("\n".join(lines).encode(), filename="t.csv")


def test_hdf5_of_another_kind_is_named(tmp_path):
    path = tmp_path / "model.h5ad"
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(ValueError, match="neither an AnnData .* top-level entries are: weights"):
        scio.read(path)
    loom = tmp_path / "x.h5"
    with h5py.File(loom, "w") as f:
        f.create_dataset("matrix", data=np.ones((3, 3)))
        f.create_group("row_attrs")
        f.create_group("col_attrs")
    with pytest.raises(ValueError, match="loom"):
        scio.read(loom)


def test_10x_h5_renamed_h5ad_is_read_by_content(small, tmp_path):
    from test_io import _write_10x_h5

    got = scio.read(_write_10x_h5(small, tmp_path / "renamed.h5ad"))
    assert got.shape == small.shape
    assert "holds a 10x Genomics HDF5 matrix" in scio.read_report(got).notes[0]


def test_text_named_h5ad_says_it_is_text(tmp_path):
    path = tmp_path / "table.h5ad"
    path.write_text("gene,cellA\nMT-CO1,1\n")
    with pytest.raises(ValueError, match="plain text that looks like a comma-separated table"):
        scio.read(path)


def test_inconsistent_sparse_h5ad_is_refused(small, tmp_path):
    path = tmp_path / "bad_indices.h5ad"
    small.write_h5ad(path)
    with h5py.File(path, "a") as f:
        idx = f["X/indices"][...]
        idx[0] = 10_000  # beyond the 30 genes
        f["X/indices"][...] = idx
    with pytest.raises(ValueError, match="inconsistent|truncated or corrupt"):
        scio.read(path)


def test_lone_mtx_says_what_is_missing():
    with pytest.raises(ValueError, match="no gene or cell names. Upload the whole 10x folder"):
        scio.read(b"%%MatrixMarket matrix coordinate integer general\n1 1 1\n1 1 1\n", filename="matrix.mtx")


def test_long_non_ascii_file_name(small):
    text = "\n".join(_lines(small)).encode()
    name = "données_été_" * 30 + "数据" * 60 + ".csv"
    assert len(name.encode()) > 255
    assert scio.read(text, filename=name).shape == (40, 30)


def test_float32_overflow_at_read_time(small, tmp_path):
    lines = _lines(small)
    fields = lines[2].split(",")
    fields[3] = "1e39"
    lines[2] = ",".join(fields)
    with pytest.raises(ValueError, match="1e\\+39 at row 'cell0002'.* too large for 32-bit floats"):
        scio.read("\n".join(lines).encode(), filename="t.csv")
    a = small.copy()
    a.X = a.X.toarray().astype(np.float64)
    a.X[0, 0] = 1e300
    a.write_h5ad(tmp_path / "f64.h5ad")
    with pytest.raises(ValueError, match="too large for 32-bit floats"):
        scio.read(tmp_path / "f64.h5ad")


def test_all_zero_and_no_shared_gene_are_clear_errors(small):
    zero = pd.DataFrame(0, index=small.obs_names, columns=small.var_names)
    with pytest.raises(ValueError, match="All 40 × 30 values are zero"):
        scio.read(_csv(zero), filename="z.csv")
    diag = pd.DataFrame(np.eye(40, 30, dtype=int) * 5, index=small.obs_names, columns=small.var_names)
    with pytest.raises(ValueError, match="No gene is detected in two or more"):
        scio.read(_csv(diag), filename="d.csv")


# ------------------------------------------------------------------------------------------------
# sparse stays sparse (issue 17 item 12)
# ------------------------------------------------------------------------------------------------


def test_sparse_table_and_mtx_stay_sparse(small, tmp_path):
    got = scio.read("\n".join(_lines(small)).encode(), filename="t.csv")
    assert sp.issparse(got.X) == (small.X.nnz < 0.5 * np.prod(small.shape))
    from test_io import _write_mtx_dir

    mtx = scio.read(_write_mtx_dir(small, tmp_path / "m", gz=True))
    assert sp.isspmatrix_csr(mtx.X) and mtx.X.nnz == small.X.nnz
