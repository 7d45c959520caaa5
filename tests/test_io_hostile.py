"""Issue 30: hostile uploads. One test per class; each builds its own small hostile file."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest

from scclust_core import datasets
from scclust_core import io as scio
from scclust_core.io import h5safety

SECRET = np.arange(40 * 30, dtype=np.float32).reshape(40, 30) + 7.0


@pytest.fixture()
def good_h5ad(tmp_path: Path) -> Path:
    adata = datasets.synthetic(n_cells=40, n_genes=30, n_clusters=2, seed=1)
    adata.X = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X, dtype=np.float32)
    path = tmp_path / "good.h5ad"
    adata.write_h5ad(path)
    return path


def _server_file(tmp_path: Path) -> Path:
    """A file 'on the server' the upload must never read: raw float32 bytes shaped like X."""
    secret = tmp_path / "server_secret.bin"
    secret.write_bytes(SECRET.tobytes())
    return secret


def _replace_x(path: Path, make) -> None:
    with h5py.File(path, "r+") as f:
        del f["X"]
        make(f)


def test_external_storage_dataset_is_refused_before_any_read(good_h5ad: Path, tmp_path: Path) -> None:
    secret = _server_file(tmp_path)
    _replace_x(good_h5ad, lambda f: f.create_dataset(
        "X", shape=SECRET.shape, dtype="float32", external=[(str(secret), 0, SECRET.nbytes)]))
    # precondition: anndata alone would load the server's bytes as X
    assert np.array_equal(np.asarray(ad.read_h5ad(good_h5ad).X), SECRET)
    with pytest.raises(ValueError, match="external storage"):
        scio.read(good_h5ad)
    with pytest.raises(ValueError, match="external storage"):
        scio.read(good_h5ad.read_bytes(), filename="upload.h5ad")


def test_external_link_is_refused(good_h5ad: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["X"] = SECRET
    _replace_x(good_h5ad, lambda f: f.__setitem__("X", h5py.ExternalLink(str(other), "/X")))
    assert np.array_equal(np.asarray(ad.read_h5ad(good_h5ad).X), SECRET)
    with pytest.raises(ValueError, match="external link"):
        scio.read(good_h5ad)


def test_external_link_deep_inside_a_group_is_refused(good_h5ad: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["v"] = np.arange(3)
    with h5py.File(good_h5ad, "r+") as f:
        f.require_group("uns").require_group("a").require_group("b")["leak"] = h5py.ExternalLink(str(other), "/v")
    with pytest.raises(ValueError, match="'/uns/a/b/leak' is an external link"):
        scio.read(good_h5ad)


def test_virtual_dataset_is_refused(good_h5ad: Path, tmp_path: Path) -> None:
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as f:
        f["data"] = SECRET

    def make(f):
        layout = h5py.VirtualLayout(shape=SECRET.shape, dtype="float32")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=SECRET.shape)
        f.create_virtual_dataset("X", layout)

    _replace_x(good_h5ad, make)
    assert np.array_equal(np.asarray(ad.read_h5ad(good_h5ad).X), SECRET)
    with pytest.raises(ValueError, match="virtual dataset"):
        scio.read(good_h5ad)


def test_10x_h5_with_external_storage_is_refused(tmp_path: Path) -> None:
    secret = _server_file(tmp_path)
    path = tmp_path / "filtered.h5"
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("data", shape=(10,), dtype="float32", external=[(str(secret), 0, 40)])
        m["indices"] = np.arange(10)
        m["indptr"] = np.array([0, 10])
        m["shape"] = np.array([10, 1])
        m["barcodes"] = np.array([b"AAAC-1"])
    with pytest.raises(ValueError, match="external storage"):
        scio.read(path)


def test_soft_links_inside_the_file_are_kept(good_h5ad: Path) -> None:
    with h5py.File(good_h5ad, "r+") as f:
        f.require_group("uns")["alias"] = h5py.SoftLink("/var")
    h5safety.check_self_contained(good_h5ad)  # no error: a soft link names a path in the same file
    assert scio.read(good_h5ad).n_obs == 40


def test_too_many_objects_and_too_deep_are_refused_quickly(good_h5ad: Path, monkeypatch) -> None:
    with h5py.File(good_h5ad, "r+") as f:
        g = f.require_group("uns")
        for i in range(60):
            g.create_dataset(f"e{i}", data=i)
        deep = g
        for i in range(12):
            deep = deep.create_group(f"d{i}")
    monkeypatch.setattr(h5safety, "MAX_HDF5_OBJECTS", 50)
    with pytest.raises(ValueError, match="more than 50 HDF5 objects"):
        scio.read(good_h5ad)
    monkeypatch.setattr(h5safety, "MAX_HDF5_OBJECTS", 10_000)
    monkeypatch.setattr(h5safety, "MAX_HDF5_DEPTH", 8)
    with pytest.raises(ValueError, match="nests groups more than 8 deep"):
        scio.read(good_h5ad)


def test_a_plain_h5ad_still_reads(good_h5ad: Path) -> None:
    h5safety.check_self_contained(good_h5ad)
    assert scio.read(good_h5ad).shape == (40, 30)
