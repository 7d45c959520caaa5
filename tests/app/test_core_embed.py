import numpy as np
import pytest

from scclust_core import embed


def _emb():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(c, 0.3, size=(40, 6)) for c in (0, 3, 6)]).astype(np.float32)
    z[5] = np.nan  # a cell the method dropped
    return z


@pytest.mark.parametrize("kind", ["PCA", pytest.param("t-SNE", marks=pytest.mark.slow)])
def test_views_keep_dropped_cells_nan(kind):
    xy = embed.compute(_emb(), kind)
    assert xy.shape == (120, 2) and np.isnan(xy[5]).all() and np.isfinite(np.delete(xy, 5, 0)).all()


def test_cache_and_errors(tmp_path):
    f = tmp_path / "v.npy"
    a = embed.cached(_emb(), "PCA", f)
    assert f.exists() and np.array_equal(embed.cached(_emb(), "PCA", f), a, equal_nan=True)
    with pytest.raises(ValueError, match="Unknown view"):
        embed.compute(_emb(), "MDS")


@pytest.mark.slow
def test_umap_on_learned_embedding():
    xy = embed.compute(_emb(), "UMAP")
    assert xy.shape == (120, 2) and np.isnan(xy[5]).all()
