"""Tests for scclust_core.io: every supported format round-trips, every bad input gives a clear error."""
from __future__ import annotations

import gzip
import io as pyio
import tarfile
import warnings
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scclust_core import datasets
from scclust_core import io as scio


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> ad.AnnData:
    return datasets.synthetic(n_cells=40, n_genes=30, n_clusters=2, seed=3, mito_genes=3)


def _dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def _assert_same_counts(got: ad.AnnData, want: ad.AnnData) -> None:
    assert got.shape == want.shape
    assert list(got.obs_names) == list(want.obs_names)
    assert list(got.var_names) == list(want.var_names)
    np.testing.assert_array_equal(_dense(got.X), _dense(want.X))
    assert got.X.dtype == np.float32


def _write_mtx_dir(adata: ad.AnnData, folder: Path, *, gz: bool, genes_name: str = "features.tsv") -> Path:
    """Write a CellRanger-style folder (genes × cells on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    feats = pd.DataFrame({"id": ids, "name": adata.var_names, "type": "Gene Expression"})
    bcs = pd.DataFrame({"bc": adata.obs_names})
    files = {
        "matrix.mtx": None,
        genes_name: feats.to_csv(sep="\t", header=False, index=False).encode(),
        "barcodes.tsv": bcs.to_csv(sep="\t", header=False, index=False).encode(),
    }
    buf = pyio.BytesIO()
    scipy.io.mmwrite(buf, sp.coo_matrix(adata.X.T))
    files["matrix.mtx"] = buf.getvalue()
    for name, data in files.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as fh:
                fh.write(data)
        else:
            (folder / name).write_bytes(data)
    return folder


def _write_10x_h5(adata: ad.AnnData, path: Path) -> Path:
    import h5py

    m = sp.csc_matrix(adata.X.T.astype(np.int32))  # genes × cells, column = cell
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=m.data)
        g.create_dataset("indices", data=m.indices.astype(np.int64))
        g.create_dataset("indptr", data=m.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(m.shape, dtype=np.int32))
        g.create_dataset("barcodes", data=np.array(adata.obs_names, dtype="S"))
        feat = g.create_group("features")
        feat.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(adata.n_vars)], dtype="S"))
        feat.create_dataset("name", data=np.array(adata.var_names, dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * adata.n_vars, dtype="S"))
        feat.create_dataset("genome", data=np.array(["GRCh38"] * adata.n_vars, dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return path


def _zip_dir(folder: Path, zip_path: Path, *, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, arcname=f"{prefix}{p.name}")
    return zip_path


def _table_frame(adata: ad.AnnData, *, genes_in_rows: bool) -> pd.DataFrame:
    frame = pd.DataFrame(_dense(adata.X).astype(int), index=adata.obs_names, columns=adata.var_names)
    return frame.T if genes_in_rows else frame


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------


def test_h5ad_roundtrip(small, tmp_path):
    path = scio.write(small, tmp_path / "out" / "data.h5ad")
    got = scio.read(path)
    _assert_same_counts(got, small)
    assert list(got.obs["cell_type"]) == list(small.obs["cell_type"])
    assert sp.isspmatrix_csr(got.X) or isinstance(got.X, np.ndarray)


@pytest.mark.parametrize("gz", [False, True])
def test_mtx_dir(small, tmp_path, gz):
    folder = _write_mtx_dir(small, tmp_path / "filtered", gz=gz)
    got = scio.read(folder)
    _assert_same_counts(got, small)
    assert got.var["gene_ids"].iloc[0] == "ENSG00000000000"


def test_mtx_dir_old_genes_tsv(small, tmp_path):
    folder = _write_mtx_dir(small, tmp_path / "v2", gz=False, genes_name="genes.tsv")
    _assert_same_counts(scio.read(folder), small)


@pytest.mark.parametrize("nested", [False, True])
def test_mtx_zip(small, tmp_path, nested):
    folder = _write_mtx_dir(small, tmp_path / "filtered", gz=True)
    zpath = _zip_dir(folder, tmp_path / "m.zip", prefix="sample1/filtered_feature_bc_matrix/" if nested else "")
    _assert_same_counts(scio.read(zpath), small)


@pytest.mark.parametrize("nested", [False, True])
def test_mtx_targz(small, tmp_path, nested):
    folder = _write_mtx_dir(small, tmp_path / "filtered", gz=False)
    tpath = tmp_path / "m.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for p in folder.iterdir():
            tf.add(p, arcname=f"outs/filtered/{p.name}" if nested else p.name)
    _assert_same_counts(scio.read(tpath), small)


def test_10x_h5(small, tmp_path):
    got = scio.read(_write_10x_h5(small, tmp_path / "filtered.h5"))
    _assert_same_counts(got, small)


@pytest.mark.parametrize("genes_in_rows", [False, True])
@pytest.mark.parametrize("suffix", [".csv", ".tsv.gz", ".txt"])
def test_table_orientation_auto(small, tmp_path, genes_in_rows, suffix):
    frame = _table_frame(small, genes_in_rows=genes_in_rows)
    path = tmp_path / f"counts{suffix}"
    frame.to_csv(path, sep="," if suffix == ".csv" else "\t")
    _assert_same_counts(scio.read(path), small)


def test_table_override_and_fallback(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.poisson(2.0, size=(6, 10))
    frame = pd.DataFrame(values, index=[f"r{i}" for i in range(6)], columns=[f"c{j}" for j in range(10)])
    path = tmp_path / "neutral.csv"
    frame.to_csv(path)
    with pytest.raises(scio.OrientationUnclearError, match="transpose=") as info:  # no evidence: ask, never guess
        scio.read(path)
    assert info.value.preview.shape == (6, 6)
    assert scio.read(path, transpose=False).shape == (6, 10)
    flipped = scio.read(path, transpose=True)
    assert flipped.shape == (10, 6)
    np.testing.assert_array_equal(_dense(flipped.X), values.T)
    semi = tmp_path / "semi.txt"
    frame.to_csv(semi, sep=";")
    assert scio.read(semi, sep=";", transpose=False).shape == (6, 10)


def test_table_dense_when_mostly_nonzero(tmp_path):
    frame = pd.DataFrame(np.full((4, 5), 3), index=[f"cell{i}" for i in range(4)],
                         columns=["MT-CO1", "A", "B", "C", "D"])
    path = tmp_path / "dense.csv"
    frame.to_csv(path)
    got = scio.read(path)
    assert isinstance(got.X, np.ndarray) and got.X.dtype == np.float32


@pytest.mark.parametrize("kind", ["h5ad", "zip", "csv"])
def test_read_from_bytesio(small, tmp_path, kind):
    if kind == "h5ad":
        src = scio.write(small, tmp_path / "x.h5ad")
    elif kind == "zip":
        src = _zip_dir(_write_mtx_dir(small, tmp_path / "f", gz=True), tmp_path / "x.zip")
    else:
        src = tmp_path / "x.csv"
        _table_frame(small, genes_in_rows=True).to_csv(src)
    buf = pyio.BytesIO(src.read_bytes())
    buf.name = f"upload.{kind}"
    _assert_same_counts(scio.read(buf), small)
    _assert_same_counts(scio.read(src.read_bytes(), filename=f"x.{kind}"), small)


def test_h5ad_with_lognorm_x_and_counts_layer(small, tmp_path):
    adata = small.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.log1p(_dense(adata.X)) - 1.0)  # has negatives, e.g. scaled data
    got = scio.read(scio.write(adata, tmp_path / "norm.h5ad"))
    summary = scio.describe(got)  # the scanpy convention: the counts in layers['counts'] become the data
    assert summary.is_counts and summary.counts_location == "X"
    np.testing.assert_array_equal(_dense(got.X), _dense(small.X))
    assert "layers['counts'] are used" in " ".join(scio.read_report(got).notes)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        scio.read(path)
    with pytest.raises(ValueError, match="empty"):
        scio.read(pyio.BytesIO(b""), filename="x.h5ad")


def test_unknown_format(tmp_path):
    path = tmp_path / "x.foo"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match=r"Unknown file format 'x.foo': upload \.h5ad"):
        scio.read(path)
    with pytest.raises(ValueError, match=r"Unknown file format 'book.xlsx'"):
        scio.read(b"PK\x03\x04 an excel workbook is a zip too", filename="book.xlsx")


def test_gzipped_table_without_gz_suffix(small, tmp_path):
    text = _table_frame(small, genes_in_rows=True).to_csv().encode()
    _assert_same_counts(scio.read(gzip.compress(text), filename="counts.csv"), small)
    _assert_same_counts(scio.read(pyio.BytesIO(text)), small)  # no name at all: sniffed as a table


def test_non_numeric_cell(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("gene,cellA,cellB\nMT-CO1,1,2\nGAPDH,3,abc\n")
    with pytest.raises(ValueError, match=r"non-numeric value 'abc' at row 'GAPDH', column 'cellB'"):
        scio.read(path)


def test_negative_value(tmp_path):
    path = tmp_path / "neg.csv"
    path.write_text("gene,cellA,cellB\nMT-CO1,1,2\nGAPDH,3,-4\n")
    with pytest.raises(ValueError, match="negative"):
        scio.read(path)


@pytest.mark.parametrize("token,word", [("", "NaN"), ("nan", "NaN"), ("inf", "infinite")])
def test_nan_inf(tmp_path, token, word):
    path = tmp_path / "nan.csv"
    path.write_text(f"gene,cellA,cellB\nMT-CO1,1,2\nGAPDH,3,{token}\n")
    with pytest.raises(ValueError, match=word):
        scio.read(path)


def test_duplicated_names(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("cell,MT-CO1,GAPDH,GAPDH,GAPDH\ncell1,1,2,3,4\ncell1,0,1,0,1\ncell2,5,0,0,1\n")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        got = scio.read(path, transpose=False)
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert any("2 duplicated gene names" in m for m in messages)
    assert any("1 duplicated cell names" in m for m in messages)
    assert not any("not unique" in m for m in messages)  # anndata's vaguer warning is replaced by ours
    assert got.var_names.is_unique and got.obs_names.is_unique
    assert got.shape == (3, 4)


def test_truncated_h5ad(small, tmp_path):
    path = scio.write(small, tmp_path / "full.h5ad")
    data = path.read_bytes()
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        scio.read(cut)


def test_corrupt_zip(small, tmp_path):
    zpath = _zip_dir(_write_mtx_dir(small, tmp_path / "f", gz=True), tmp_path / "x.zip")
    data = zpath.read_bytes()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        scio.read(bad)
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        scio.read(not_zip)


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_zip_path_traversal(tmp_path, member):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(member, "pwned")
        zf.writestr("matrix.mtx", "%%MatrixMarket matrix coordinate integer general\n1 1 0\n")
    with pytest.raises(ValueError, match="unsafe path"):
        scio.read(zpath)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_tar_symlink_skipped_and_traversal_rejected(small, tmp_path):
    folder = _write_mtx_dir(small, tmp_path / "f", gz=False)
    tpath = tmp_path / "link.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for p in folder.iterdir():
            tf.add(p, arcname=p.name)
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    _assert_same_counts(scio.read(tpath), small)
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 3
        tf.addfile(info, pyio.BytesIO(b"bad"))
    with pytest.raises(ValueError, match="unsafe path"):
        scio.read(evil)


def test_archive_without_matrix(tmp_path):
    zpath = tmp_path / "other.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(ValueError, match="holds no 10x matrix"):
        scio.read(zpath)


@pytest.mark.parametrize("text", ["gene,cellA,cellB\n", "gene\nMT-CO1\nGAPDH\n"])
def test_no_cells_or_genes(tmp_path, text):
    path = tmp_path / "header.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="at least one row and column"):
        scio.read(path)


def test_mismatched_10x_folder(small, tmp_path):
    folder = _write_mtx_dir(small, tmp_path / "f", gz=False)
    (folder / "barcodes.tsv").write_text("onlyone\n")
    with pytest.raises(ValueError, match="different runs"):
        scio.read(folder)
    (folder / "barcodes.tsv").unlink()
    with pytest.raises(ValueError, match="missing barcodes.tsv"):
        scio.read(folder)


def test_missing_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        scio.read(tmp_path / "nope.h5ad")


def test_wrong_extension_content(tmp_path):
    path = tmp_path / "table.h5ad"
    path.write_text("gene,cellA\nMT-CO1,1\n")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        scio.read(path)


# ------------------------------------------------------------------------------------------------
# describe / counts / fingerprint / write
# ------------------------------------------------------------------------------------------------


def test_is_integer_counts():
    assert scio.is_integer_counts(np.array([[0, 1.0], [2.0, 5.0]], dtype=np.float32))
    assert scio.is_integer_counts(sp.csr_matrix(np.array([[0, 3.0]])))
    assert not scio.is_integer_counts(np.array([[0.5, 1.0]]))
    assert not scio.is_integer_counts(np.array([[-1.0, 1.0]]))
    assert not scio.is_integer_counts(np.array([[np.nan, 1.0]]))
    assert scio.is_integer_counts(np.arange(12, dtype=np.int64).reshape(3, 4))
    big = np.ones(3_000_000, dtype=np.float32)
    assert scio.is_integer_counts(big)
    assert not scio.is_integer_counts(None)


def test_describe_counts_vs_lognorm(small):
    summary = scio.describe(small)
    assert summary.is_counts and summary.counts_location == "X"
    assert summary.n_cells == 40 and summary.n_genes == 30
    assert summary.annotation_columns == ["cell_type"]
    assert summary.sparse and summary.has_mito
    text = summary.to_text()
    assert "40 cells" in text and "cell_type" in text

    lognorm = small.copy()
    lognorm.X = sp.csr_matrix(np.log1p(_dense(lognorm.X) / 7.0))
    s2 = scio.describe(lognorm)
    assert not s2.is_counts and s2.counts_location is None
    assert "No raw integer counts" in s2.to_text()
    lognorm.raw = small.copy()
    assert scio.describe(lognorm).counts_location == "raw.X"


def test_annotation_columns_exclude_qc(small):
    adata = small.copy()
    rng = np.random.default_rng(0)
    adata.obs["n_counts"] = rng.integers(0, 3, adata.n_obs)
    adata.obs["pct_counts_mt"] = rng.random(adata.n_obs)
    adata.obs["batch"] = rng.integers(0, 3, adata.n_obs)
    adata.obs["donor"] = np.where(rng.random(adata.n_obs) > 0.5, "d1", "d2")
    adata.obs["is_doublet"] = rng.random(adata.n_obs) > 0.5
    adata.obs["barcode"] = [f"bc{i}" for i in range(adata.n_obs)]  # all unique: not a label
    adata.obs["constant"] = "x"
    cols = scio.describe(adata).annotation_columns
    assert cols == ["cell_type", "batch", "donor", "is_doublet"]


def test_fingerprint(small):
    fp1 = scio.dataset_fingerprint(small)
    fp2 = scio.dataset_fingerprint(small.copy())
    assert fp1 == fp2 and fp1["n_cells"] == 40 and fp1["n_genes"] == 30 and len(fp1["sha256"]) == 64
    changed = small.copy()
    changed.X = changed.X.copy()
    changed.X.data[0] += 1
    assert scio.dataset_fingerprint(changed)["sha256"] != fp1["sha256"]
    renamed = small.copy()
    renamed.obs_names = [f"x{i}" for i in range(renamed.n_obs)]
    assert scio.dataset_fingerprint(renamed)["sha256"] != fp1["sha256"]
    dense = small.copy()
    dense.X = _dense(dense.X)
    assert scio.dataset_fingerprint(dense) == scio.dataset_fingerprint(dense.copy())


def test_sanitize_uns():
    out = scio.sanitize_uns(
        {"a": (1, 2), "b": None, "c": np.float32(1.5), "d": {"e": np.int64(3), "f": None, "g": ("x", "y")},
         "h": np.arange(3), "p": Path("/tmp/x")}
    )
    assert out == {"a": [1, 2], "c": 1.5, "d": {"e": 3, "g": ["x", "y"]}, "h": out["h"], "p": "/tmp/x"}
    assert isinstance(out["c"], float) and isinstance(out["d"]["e"], int)
    with pytest.raises(ValueError, match=r"uns\['bad'\]\['obj'\]"):
        scio.sanitize_uns({"bad": {"obj": object()}})
    with pytest.raises(ValueError, match=r"uns\['mixed'\]"):
        scio.sanitize_uns({"mixed": [1, "a", [2, 3]]})


def test_write_sanitizes(small, tmp_path):
    adata = small.copy()
    adata.uns["params"] = {"k": (10, 20), "none": None, "scale": np.float64(0.5)}
    adata.obs["mixed"] = pd.Series([1, "a"] * (adata.n_obs // 2), index=adata.obs_names, dtype=object)
    adata.obs[3] = 1.0  # non-string column name
    before = dict(adata.uns["params"])
    path = scio.write(adata, tmp_path / "w.h5ad")
    assert adata.uns["params"] == before  # input untouched
    back = ad.read_h5ad(path)
    assert list(back.uns["params"]["k"]) == [10, 20] and "none" not in back.uns["params"]
    assert list(back.obs["mixed"].astype(str)[:2]) == ["1", "a"]
    assert "3" in back.obs.columns
    with pytest.raises(ValueError, match=r"uns\['oops'\]"):
        bad = small.copy()
        bad.uns["oops"] = object()
        scio.write(bad, tmp_path / "bad.h5ad")

