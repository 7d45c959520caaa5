"""One test (at least) per class of hostile or misleading input: decompression bombs and the temp-disk cap,
the table parser's real memory peak, duplicate sparse entries, lying Matrix Market headers, K from unused
label categories, numeric header rows, and CLI outputs and counts checked before any work."""
from __future__ import annotations

import gzip
import io as pyio
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scclust_core import io as scio
from scclust_core.bench import n_types, run_bench
from scclust_core.cli import main
from scclust_core.io import budget, tables

_BOMB_TEXT = 12 * 1024**2  # past the ratio's grace (8 MiB), and compresses ~1000-fold


def _features(n: int) -> str:
    return "".join(f"g{i}\tG{i}\n" for i in range(n))


def _barcodes(n: int) -> str:
    return "".join(f"b{i}\n" for i in range(n))


def _mtx_zip(mtx: bytes | str, n_feat: int, n_bc: int) -> bytes:
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("matrix.mtx", mtx)
        zf.writestr("features.tsv", _features(n_feat))
        zf.writestr("barcodes.tsv", _barcodes(n_bc))
    return buf.getvalue()


def _bomb_mtx(n_bytes: int = _BOMB_TEXT) -> bytes:
    """A valid-looking matrix.mtx whose comment line inflates it to ``n_bytes`` of zeros."""
    head = b"%%MatrixMarket matrix coordinate integer general\n"
    return head + b"%" + b"0" * n_bytes + b"\n3 2 1\n1 1 1\n"


def _noisy_csv(n_rows: int, n_cols: int, seed: int = 0) -> bytes:
    """Counts whose text hardly compresses (random digits): for the disk cap, not the ratio."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 1000, (n_rows, n_cols)), index=[f"cell{i}" for i in range(n_rows)],
                         columns=[f"MT-G{j}" for j in range(n_cols)])
    return frame.to_csv().encode()


# ------------------------------------------------------------------------------------------------
# class 1: decompression bombs stop at a compression ratio, checked while streaming; temp disk has its own cap
# ------------------------------------------------------------------------------------------------


def test_gzip_table_bomb_is_stopped_by_the_ratio():
    bomb = gzip.compress(b"gene,c1\n" + b"g,0\n" * (_BOMB_TEXT // 4))
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match=r"'x.csv.gz' expands more than 200-fold .* decompression bomb"):
        scio.read(bomb, filename="x.csv.gz")


def _lie_about_compressed_size(data: bytes, member: str, claimed: int) -> bytes:
    """Rewrite a zip member's compressed size (local and central headers) so its declared ratio looks harmless."""
    out = bytearray(data)
    name = member.encode()
    local = out.find(b"PK\x03\x04")
    while local >= 0:
        if out[local + 30:local + 30 + len(name)] == name:
            struct.pack_into("<I", out, local + 18, claimed)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central >= 0:
        if out[central + 46:central + 46 + len(name)] == name:
            struct.pack_into("<I", out, central + 20, claimed)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_zip_bomb_with_a_lying_header_is_stopped_while_streaming():
    """The bomb's header claims 10× more compressed bytes than it has (a stored member after it makes the claim
    fit in the file), so the declared ratio is harmless: the ratio measured while inflating stops it."""
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("matrix.mtx", _bomb_mtx(32 * 1024**2))  # stopped after ~16 MiB, long before its end
        zf.writestr("features.tsv", _features(3))
        zf.writestr("barcodes.tsv", _barcodes(2))
        zf.writestr("padding.bin", np.random.default_rng(0).bytes(4 * 1024**2), compress_type=zipfile.ZIP_STORED)
    honest = buf.getvalue()
    with zipfile.ZipFile(pyio.BytesIO(honest)) as zf:
        info = zf.getinfo("matrix.mtx")
        assert info.file_size / info.compress_size > budget.MAX_COMPRESSION_RATIO
    with pytest.raises(ValueError, match=r"member 'matrix.mtx', as declared\) expands more than 200-fold"):
        scio.read(honest, filename="m.zip")
    lying = _lie_about_compressed_size(honest, "matrix.mtx", info.file_size // 10)  # declares only 10-fold
    with pytest.raises(ValueError, match=r"member 'matrix.mtx'\) expands more than 200-fold \(.* from .* of "
                                         r"compressed data\)"):
        scio.read(lying, filename="m.zip")


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_tar_bomb_is_refused(mode):
    buf = pyio.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in (("matrix.mtx", _bomb_mtx()), ("features.tsv", _features(3).encode()),
                           ("barcodes.tsv", _barcodes(2).encode())):
            info = tarfile.TarInfo(f"sample/{name}")
            info.size = len(data)
            tf.addfile(info, pyio.BytesIO(data))
    assert len(buf.getvalue()) * budget.MAX_COMPRESSION_RATIO < _BOMB_TEXT
    with pytest.raises(ValueError, match=r"Archive 'b.tar.*' \(up to member 'sample/matrix.mtx', as declared\) "
                                         r"expands more than 200-fold"):
        scio.read(buf.getvalue(), filename="b.tar" + {"w:gz": ".gz", "w:bz2": ".bz2", "w:xz": ".xz"}[mode])


def test_temp_disk_cap_of_its_own(monkeypatch):
    text = _noisy_csv(300, 400)  # ~470 KB of text, compresses 2–3-fold: no bomb
    assert len(text) > 400_000
    monkeypatch.setenv(budget.TEMP_ENV_VAR, "256K")
    with pytest.raises(ValueError, match=r"more than 256.0 KiB of temporary files, the disk limit for one read "
                                         r"\(SCCLUST_MAX_TEMP_BYTES=256K\)"):
        scio.read(gzip.compress(text), filename="t.csv.gz")
    with pytest.raises(ValueError, match=r"member 'matrix.mtx'\) unpacks to more than 256.0 KiB of temporary"):
        scio.read(_mtx_zip(b"%%MatrixMarket matrix coordinate integer general\n%" + text + b"\n3 2 1\n1 1 1\n",
                           3, 2), filename="m.zip")
    monkeypatch.delenv(budget.TEMP_ENV_VAR)
    assert scio.read(gzip.compress(text), filename="t.csv.gz", transpose=False).shape == (300, 400)


def test_temp_cap_never_exceeds_free_disk_less_the_margin(monkeypatch):
    monkeypatch.setattr(budget, "free_temp_space", lambda: budget.DISK_MARGIN_BYTES + 100_000)
    cap, why = budget.temp_cap()
    assert cap == 100_000 and "free space" in why
    with pytest.raises(ValueError, match=r"temporary files, the disk limit for one read \(the free space in .* "
                                         r"less a 1.0 GiB margin; free some disk\)"):
        scio.read(gzip.compress(_noisy_csv(300, 400)), filename="t.csv.gz")
    monkeypatch.setattr(budget, "free_temp_space", lambda: 0)
    assert budget.temp_cap()[0] == 0


def test_temp_allowance_is_shared_by_the_files_of_one_read(monkeypatch, tmp_path):
    """Each of three 200 KB members fits a 512 KB cap alone; together they do not."""
    monkeypatch.setenv(budget.TEMP_ENV_VAR, "512K")
    pad = b"%" + _noisy_csv(150, 300)[:200_000].replace(b"\n", b" ") + b"\n"
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("matrix.mtx", b"%%MatrixMarket matrix coordinate integer general\n" + pad + b"3 2 1\n1 1 1\n")
        zf.writestr("features.tsv", _features(3).encode() + b"#" + pad)
        zf.writestr("barcodes.tsv", _barcodes(2).encode() + b"#" + pad)
    with pytest.raises(ValueError, match="of temporary files"):
        scio.read(buf.getvalue(), filename="m.zip")


# ------------------------------------------------------------------------------------------------
# class 2: the table estimate covers what parsing really holds
# ------------------------------------------------------------------------------------------------


def _dense_ish_csv(path: Path, n_genes: int = 600, n_cells: int = 1500) -> Path:
    rng = np.random.default_rng(0)
    mu = rng.lognormal(0, 1.5, size=n_genes)[:, None] * rng.uniform(0.5, 1.5, size=n_cells)[None, :]
    frame = pd.DataFrame(rng.poisson(mu), index=[f"gene{i}" for i in range(n_genes)],
                         columns=[f"cell{j}" for j in range(n_cells)])
    frame.to_csv(path)
    return path


def _estimate(path: Path) -> float:
    skip, lines = tables._head(path, path.name)
    sep = tables.choose_sep(lines, path.name, None)
    cols, n_header = tables._columns(lines, sep, None)
    with budget.budget_scope(None):
        return tables.parse_peak_bytes(path.stat().st_size, lines, n_header, len(cols), sep)


def test_table_estimate_covers_the_traced_peak(tmp_path):
    path = _dense_ish_csv(tmp_path / "t.csv")
    text = path.stat().st_size
    estimate = _estimate(path)
    tracemalloc.start()
    try:
        got = scio.read(path, transpose=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.shape == (1500, 600)
    assert estimate >= peak  # traced numpy/pandas arrays; pandas' tokenizer (not traced) is in the factor too
    assert 5 * text < estimate < 25 * text  # was 2 × text: 4.5–7× below the measured RSS peak


def test_table_budget_refuses_what_the_old_estimate_let_through(tmp_path):
    path = _dense_ish_csv(tmp_path / "t.csv")
    old_estimate = 2.0 * path.stat().st_size + 1500 * 2048
    with pytest.raises(ValueError, match=r"1,500 columns\), parsed, would need about .* more than the"):
        scio.read(path, transpose=True, max_bytes=int(old_estimate * 1.5))
    assert scio.read(path, transpose=True, max_bytes=int(_estimate(path) * 1.05)).shape == (1500, 600)


# ------------------------------------------------------------------------------------------------
# class 3: entries stored twice at one position are summed at read, and said so
# ------------------------------------------------------------------------------------------------

_DUP_NOTE = "repeat a (row, column) position already stored: they were added"


def _with_duplicates() -> tuple[sp.csr_matrix, np.ndarray]:
    """4 cells × 3 genes in CSR with two repeated entries, and the dense matrix they mean."""
    indptr = np.array([0, 3, 5, 7, 9])
    indices = np.array([0, 0, 2, 1, 1, 0, 2, 1, 2])
    data = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(4, 3))
    want = np.array([[3, 0, 3], [0, 9, 0], [6, 0, 7], [0, 8, 9]], dtype=np.float32)
    return X, want


def _notes(adata) -> str:
    return " ".join(scio.read_report(adata).notes)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_h5ad_duplicates_are_summed_with_a_note(tmp_path, fmt):
    X, want = _with_duplicates()
    a = ad.AnnData(X if fmt == "csr" else X.tocsc())
    a.obs_names, a.var_names = [f"c{i}" for i in range(4)], ["A", "B", "C"]
    a.write_h5ad(tmp_path / "d.h5ad")
    with h5py.File(tmp_path / "d.h5ad") as f:
        assert f["X/data"].shape == (9,)  # the duplicates really are in the file
    got = scio.read(tmp_path / "d.h5ad")
    np.testing.assert_array_equal(got.X.toarray(), want)
    assert got.X.has_canonical_format and "2 entries of the sparse matrix " + _DUP_NOTE in _notes(got)


def test_mtx_duplicates_are_summed_with_a_note():
    body = "1 1 1\n1 1 2\n2 2 4\n3 1 3\n2 2 5\n1 3 6\n3 3 7\n"
    got = scio.read(_mtx_zip(f"%%MatrixMarket matrix coordinate integer general\n3 3 7\n{body}", 3, 3),
                    filename="m.zip")
    np.testing.assert_array_equal(got.X.toarray(), np.array([[3, 0, 3], [0, 9, 0], [6, 0, 7]]))
    assert "2 entries of the sparse matrix " + _DUP_NOTE in _notes(got)


def test_10x_h5_duplicates_are_summed_with_a_note(tmp_path):
    X, want = _with_duplicates()  # the 10x layout: CSC genes × cells = CSR cells × genes
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([3, 4], dtype=np.int32))
        g.create_dataset("barcodes", data=np.array([f"AAACGT{i}" for i in range(4)], dtype="S"))
        feat = g.create_group("features")
        feat.create_dataset("id", data=np.array([f"ENSG{i:011d}" for i in range(3)], dtype="S"))
        feat.create_dataset("name", data=np.array(["A", "B", "C"], dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * 3, dtype="S"))
        feat.create_dataset("genome", data=np.array(["GRCh38"] * 3, dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    got = scio.read(path)
    np.testing.assert_array_equal(got.X.toarray(), want)
    assert _DUP_NOTE in _notes(got)


def test_no_duplicate_note_on_clean_data(tmp_path):
    X, want = _with_duplicates()
    clean = ad.AnnData(sp.csr_matrix(want))
    clean.write_h5ad(tmp_path / "c.h5ad")
    assert _DUP_NOTE not in _notes(scio.read(tmp_path / "c.h5ad"))


# ------------------------------------------------------------------------------------------------
# class 4: Matrix Market headers are checked against the entries
# ------------------------------------------------------------------------------------------------


def test_integer_header_over_real_values_reads_them_as_written():
    mtx = "%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 2.5\n2 1 1\n3 2 4\n2 2 3\n"
    got = scio.read(_mtx_zip(mtx, 3, 2), filename="m.zip")
    np.testing.assert_allclose(got.X.toarray(), [[2.5, 1, 0], [0, 3, 4]])
    assert "declares integer values but holds 1 that are not whole numbers (e.g. 2.5): they were read as " \
           "written" in _notes(got)


def test_integer_header_over_integers_has_no_note():
    got = scio.read(_mtx_zip("%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 2\n1 2 1\n2 2 1\n"
                             "3 2 4\n", 3, 2), filename="m.zip")
    assert "not whole numbers" not in _notes(got) and got.X.sum() == 8


@pytest.mark.parametrize("symmetry", ["symmetric", "skew-symmetric", "hermitian"])
def test_symmetric_header_over_both_triangles_is_refused(symmetry):
    mtx = f"%%MatrixMarket matrix coordinate integer {symmetry}\n3 3 4\n1 1 1\n2 1 3\n1 2 3\n3 3 2\n"
    with pytest.raises(ValueError, match=rf"declares a '{symmetry}' matrix .* holds entries on both sides of the "
                                         r"diagonal \(e.g. \(1, 2\) and \(2, 1\)\).* A count matrix is 'general'"):
        scio.read(_mtx_zip(mtx, 3, 3), filename="m.zip")


def test_symmetric_header_over_one_triangle_is_mirrored_with_a_note():
    mtx = "%%MatrixMarket matrix coordinate integer symmetric\n3 3 4\n1 1 1\n2 1 3\n3 1 2\n2 2 4\n"
    got = scio.read(_mtx_zip(mtx, 3, 3), filename="m.zip")
    np.testing.assert_array_equal(got.X.toarray(), [[1, 3, 2], [3, 4, 0], [2, 0, 0]])
    assert "declares a 'symmetric' matrix: the stored triangle was mirrored" in _notes(got)


def test_complex_and_symmetric_array_headers_are_refused():
    with pytest.raises(ValueError, match="complex numbers"):
        scio.read(_mtx_zip("%%MatrixMarket matrix coordinate complex general\n3 2 1\n1 1 1 0\n", 3, 2),
                  filename="m.zip")
    with pytest.raises(ValueError, match="dense Matrix Market array declared 'symmetric'"):
        scio.read(_mtx_zip("%%MatrixMarket matrix array integer symmetric\n3 3\n1\n2\n3\n4\n5\n6\n", 3, 3),
                  filename="m.zip")


# ------------------------------------------------------------------------------------------------
# class 5: K counts only the label categories that have cells
# ------------------------------------------------------------------------------------------------


def test_k_ignores_unused_categories(tmp_path, counts_adata):
    labels = counts_adata.obs["cell_type"].cat.add_categories([f"gone{i}" for i in range(5)])
    counts_adata.obs["cell_type"] = labels
    assert labels.cat.categories.size == 8 and n_types(labels) == 3
    counts_adata.write_h5ad(tmp_path / "d.h5ad")
    rows = run_bench(tmp_path / "d.h5ad", ["kmeans"], sets={"n_top_genes": "100", "n_pcs": "10"},
                     stream=pyio.StringIO())
    assert [r["k"] for r in rows] == [3] and rows[0]["k_found"] == 3


def test_bench_needs_a_seed(tmp_path, counts_adata):
    counts_adata.write_h5ad(tmp_path / "d.h5ad")
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        run_bench(tmp_path / "d.h5ad", ["kmeans"], seeds=0)


# ------------------------------------------------------------------------------------------------
# class 6: the user can say the first line is (or is not) a header
# ------------------------------------------------------------------------------------------------

_ENTREZ = [1, 2, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20]


def _entrez_table(n_cells: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(rng.poisson(3, (n_cells, len(_ENTREZ))), index=[f"cell{i}" for i in range(n_cells)],
                        columns=[str(g) for g in _ENTREZ])


def test_numeric_header_is_refused_unless_the_user_says_it_is_one():
    data = _entrez_table().to_csv().encode()
    with pytest.raises(ValueError, match=r"probably has no header row.*say so: header=True \(CLI: --header yes\)"):
        scio.read(data, filename="e.csv", transpose=False)
    got = scio.read(data, filename="e.csv", transpose=False, header=True)
    assert list(got.var_names[:3]) == ["1", "2", "9"] and got.shape == (30, len(_ENTREZ))
    assert "column names from the header row (header=True was given)" in _notes(got)


def test_header_false_reads_the_first_line_as_data():
    frame = _entrez_table()
    data = frame.to_csv(header=False).encode()
    got = scio.read(data, filename="e.csv", transpose=False, header=False)
    assert got.shape == (30, len(_ENTREZ)) and list(got.var_names[:2]) == ["col1", "col2"]
    np.testing.assert_array_equal(got.X.toarray() if sp.issparse(got.X) else got.X, frame.to_numpy())
    with pytest.raises(ValueError, match="header must be True"):
        scio.read(data, filename="e.csv", header="yes")


def test_cli_header_option(tmp_path, capsys):
    path = tmp_path / "e.csv"
    _entrez_table(60).to_csv(path)
    args = ["cluster", str(path), "--method", "kmeans", "--n-clusters", "2", "--set", "n_pcs=5",
            "--transpose", "false", "--out", str(tmp_path / "o.h5ad")]
    assert main(args) == 2 and "--header yes" in capsys.readouterr().err
    assert main(args + ["--header", "yes"]) == 0
    assert list(ad.read_h5ad(tmp_path / "o.h5ad").var_names[:2]) == ["1", "2"]
    with pytest.raises(SystemExit) as info:
        main(args + ["--header", "maybe"])
    assert info.value.code == 2 and "--header expects" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# class 7: CLI outputs and counts are checked before any work
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_read(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(scio, "read", boom)


def test_cluster_out_must_be_h5ad_and_not_the_input(tmp_path, counts_adata, capsys, no_read):
    src = tmp_path / "in.h5ad"
    counts_adata.write_h5ad(src)
    base = ["cluster", str(src), "--method", "kmeans", "--n-clusters", "3"]
    assert main(base + ["--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "must end in .h5ad" in err and "Traceback" not in err and not (tmp_path / "x.csv").exists()
    assert main(base + ["--out", str(tmp_path / "sub" / ".." / "in.h5ad")]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert ad.read_h5ad(src).shape == counts_adata.shape


def test_scale_out_and_cells_are_checked(tmp_path, counts_adata, capsys, no_read):
    src = tmp_path / "in.h5ad"
    counts_adata.write_h5ad(src)
    assert main(["scale", "--data", str(src), "--cells", "500", "--out", str(src)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert main(["scale", "--data", str(src), "--cells", "500", "--out", str(tmp_path / "big.csv")]) == 2
    assert "must end in .h5ad" in capsys.readouterr().err
    for cells in ("5", "5000001", "-3", "lots"):
        with pytest.raises(SystemExit) as info:
            main(["scale", "--data", str(src), "--cells", cells, "--out", str(tmp_path / "o.h5ad")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "--cells" in err and "Traceback" not in err
    err = main_err(["scale", "--data", str(src), "--cells", "9", "--out", str(tmp_path / "o.h5ad")], capsys)
    assert "--cells must be between 10 and 5,000,000, got 9" in err


def main_err(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().err


def test_bench_seeds_must_be_positive_and_out_not_an_input(tmp_path, counts_adata, capsys, no_read):
    counts_adata.write_h5ad(tmp_path / "d.h5ad")
    err = main_err(["bench", "--data", str(tmp_path), "--methods", "kmeans", "--seeds", "0"], capsys)
    assert "--seeds must be at least 1, got 0" in err
    assert main(["bench", "--data", str(tmp_path), "--methods", "kmeans", "--out", str(tmp_path / "d.h5ad")]) == 2
    assert "is one of the input datasets" in capsys.readouterr().err
