"""Property-based fuzzing of the table, Matrix Market and archive readers.

Whatever the bytes, ``read`` returns a validated AnnData or raises ``ValueError`` — never another exception —
and never allocates more than the memory budget it was given (peak traced by ``tracemalloc``; numpy reports
its buffers to it).
"""
from __future__ import annotations

import gzip
import io as pyio
import tarfile
import tracemalloc
import zipfile

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scclust_core import io as scio

BUDGET = 48 * 1024**2
FUZZ = settings(max_examples=120, deadline=10_000, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)

_TOKENS = ["0", "1", "2", "17", "3.5", "-1", "1e39", "nan", "inf", "NA", "", "abc", '"a,b"', "cell1", "MT-CO1",
           "AAACCTGAGAAGGCCT-1", "ENSG00000141510", "gene7", "0x1F", "1,000", "１", "é", "\\", "'", "#"]
_SEPS = [",", "\t", ";", " ", ", ", ",,"]


def _read_checked(data: bytes, name: str, **kw) -> None:
    tracemalloc.start()
    try:
        got = scio.read(data, filename=name, max_bytes=BUDGET, **kw)
    except ValueError as exc:
        assert str(exc)  # a message, never an empty error
        got = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < BUDGET, f"peak {peak} bytes over the {BUDGET} budget"
    if got is not None:
        assert isinstance(got, ad.AnnData) and got.n_obs > 0 and got.n_vars > 0
        assert got.X.dtype == np.float32
        values = got.X.data if sp.issparse(got.X) else got.X
        assert np.isfinite(values).all() and (values >= 0).all()
        assert got.obs_names.is_unique and got.var_names.is_unique


@st.composite
def _tables(draw) -> bytes:
    n_rows = draw(st.integers(0, 8))
    n_cols = draw(st.integers(0, 8))
    sep = draw(st.sampled_from(_SEPS))
    rows = [[draw(st.sampled_from(_TOKENS)) for _ in range(n_cols + draw(st.integers(-1, 1)))]
            for _ in range(n_rows)]
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return end.join(sep.join(r) for r in rows).encode("utf-8")


@pytest.mark.parametrize("name", ["x.csv", "x.tsv", "x.txt"])
@FUZZ
@given(data=st.binary(max_size=600))
def test_table_reader_random_bytes(name, data):
    _read_checked(data, name)


@FUZZ
@given(data=_tables(), transpose=st.sampled_from([None, True, False]), gz=st.booleans())
def test_table_reader_structured(data, transpose, gz):
    _read_checked(gzip.compress(data) if gz else data, "t.csv.gz" if gz else "t.csv", transpose=transpose)


_BIG = st.sampled_from([0, 1, 2, 3, 10, 2**31, 2 * 10**9, 10**12, 10**18])


@st.composite
def _mtx_zips(draw) -> bytes:
    rows, cols, nnz = draw(_BIG | st.integers(0, 6)), draw(_BIG | st.integers(0, 6)), draw(_BIG | st.integers(0, 12))
    field = draw(st.sampled_from(["integer", "real", "pattern", "complex", "bogus"]))
    fmt = draw(st.sampled_from(["coordinate", "array"]))
    head = f"%%MatrixMarket matrix {fmt} {field} general\n{rows} {cols}" + (f" {nnz}" if fmt == "coordinate" else "")
    body = "\n".join(" ".join(draw(st.sampled_from(["1", "2", "3", "0", "-4", "1e39", "x", "99999999999"]))
                              for _ in range(draw(st.integers(1, 3)))) for _ in range(draw(st.integers(0, 10))))
    n_feat, n_bc = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("matrix.mtx", (head + "\n" + body + "\n").encode())
        zf.writestr("features.tsv", "".join(f"g{i}\tG{i}\n" for i in range(n_feat)))
        zf.writestr("barcodes.tsv", "".join(f"b{i}\n" for i in range(n_bc)))
    return buf.getvalue()


@FUZZ
@given(data=_mtx_zips())
def test_mtx_reader_structured(data):
    _read_checked(data, "m.zip")


@pytest.mark.parametrize("name", ["a.zip", "a.tar.gz", "a.tar", "a.h5ad", "a.h5"])
@FUZZ
@given(data=st.binary(min_size=1, max_size=600))
def test_archive_and_hdf5_random_bytes(name, data):
    _read_checked(data, name)


@st.composite
def _tars(draw) -> bytes:
    buf = pyio.BytesIO()
    with tarfile.open(fileobj=buf, mode=draw(st.sampled_from(["w", "w:gz"]))) as tf:
        for _ in range(draw(st.integers(0, 4))):
            member = draw(st.sampled_from(["matrix.mtx", "features.tsv", "barcodes.tsv", "x/matrix.mtx.gz",
                                           "../up.txt", "/abs", "a/../../b", "__MACOSX/matrix.mtx", "genes.tsv"]))
            payload = draw(st.binary(max_size=120))
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            info.type = draw(st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE]))
            tf.addfile(info, pyio.BytesIO(payload) if info.type == tarfile.REGTYPE else None)
    data = buf.getvalue()
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut] + b"\x00"


@FUZZ
@given(data=_tars())
def test_tar_reader_structured(data):
    _read_checked(data or b"\x00", "a.tar.gz")
