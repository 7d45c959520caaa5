"""Several samples: batch keys checked, integration applied where each method can use it, mixing measured."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from scclust_core.integrate import batch_key_candidates, check_batches, mixing_metrics, split_warnings
from scclust_core.methods import get_method, run_method


def batched(n_per: int = 120, seed: int = 0) -> AnnData:
    """Three cell types in two batches; batch 'b' multiplies a random third of the genes by 2.5 (a clear batch effect)."""
    rng = np.random.default_rng(seed)
    n_genes, blocks = 150, 20
    types = np.tile(np.arange(3), 2 * n_per // 3)
    batch = np.repeat(["a", "b"], n_per)
    mu = np.tile(rng.gamma(2.0, 0.5, n_genes), (2 * n_per, 1))
    for t in range(3):
        mu[types == t, t * blocks:(t + 1) * blocks] *= 6
    shift = np.ones(n_genes)
    shift[rng.choice(n_genes, n_genes // 3, replace=False)] = 2.5
    mu[batch == "b"] *= shift
    x = rng.poisson(mu).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"t{t}" for t in types]), "batch": pd.Categorical(batch),
                        "donor_age": rng.uniform(20, 80, 2 * n_per)}, index=[f"c{i}" for i in range(2 * n_per)])
    ad = AnnData(sp.csr_matrix(x), obs=obs)
    ad.var_names = [f"g{i}" for i in range(n_genes)]
    return ad


@pytest.fixture(scope="module")
def data() -> AnnData:
    return batched()


def test_harmony_mixes_the_batches_and_keeps_the_types_for_classic_and_consensus(data: AnnData) -> None:
    for name, kw in (("kmeans", {"n_clusters": 3, "n_top_genes": 120, "n_pcs": 10}),
                     ("recommend", {"n_clusters": 3, "hvg_sizes": [80, 120], "pcs": [10]})):
        m = get_method(name)
        plain = m.fit(data, m.default_config(None, **kw), label_key="cell_type", batch_key="batch",
                      integration="none")
        fixed = m.fit(data, m.default_config(None, **kw), label_key="cell_type", batch_key="batch")
        assert fixed.extras["integration"]["method"] == "harmony"
        assert fixed.metrics["same_batch_share"] < plain.metrics["same_batch_share"] - 0.2, name
        assert fixed.metrics["ilisi"] > plain.metrics["ilisi"] and np.isfinite(fixed.metrics["batch_asw"])
        assert fixed.metrics["ari"] >= plain.metrics["ari"] - 0.02, name


@pytest.mark.parametrize("integration", ["combat", "bbknn"])
def test_leiden_takes_combat_and_bbknn(data: AnnData, integration: str) -> None:
    res = run_method(data.copy(), "leiden", batch_key="batch", integration=integration, n_top_genes=120, n_pcs=10)
    assert res.extras["integration"]["method"] == integration and "ilisi" in res.metrics


def test_a_deep_method_is_corrected_after_training_and_says_so(data: AnnData) -> None:
    ad = data.copy()
    res = run_method(ad, "contrastive_sc", preset="tiny", n_clusters=3, batch_key="batch", torch_threads=1)
    notes = res.extras["integration"]["notes"]
    assert any("Harmony corrected the learned embedding" in n for n in notes)
    assert ad.uns["contrastive_sc"]["integration"]["batch_key"] == "batch"
    assert {"batch_asw", "ilisi"} <= set(ad.uns["contrastive_sc"]["metrics"])
    with pytest.raises(ValueError, match="cannot use integration 'combat'"):
        run_method(data.copy(), "contrastive_sc", preset="tiny", n_clusters=3, batch_key="batch",
                   integration="combat")


def test_bad_batch_keys_are_clear_errors_before_any_work(data: AnnData) -> None:
    ad = data.copy()
    ad.obs["one"] = "x"
    ad.obs["holes"] = ad.obs["batch"].astype(object)
    ad.obs.loc[ad.obs_names[:4], "holes"] = np.nan
    ad.obs["tiny"] = np.where(np.arange(ad.n_obs) < 3, "small", "big")
    for key, match in (("nope", "no batch column"), ("one", "single value"), ("holes", "have no value"),
                       ("tiny", "fewer than 10 cells")):
        with pytest.raises(ValueError, match=match):
            run_method(ad, "kmeans", n_clusters=3, batch_key=key)
    with pytest.raises(ValueError, match="needs a batch key"):
        run_method(ad, "kmeans", n_clusters=3, integration="harmony")
    with pytest.raises(ValueError, match="cannot use integration 'bbknn'"):
        run_method(ad, "kmeans", n_clusters=3, batch_key="batch", integration="bbknn")
    assert check_batches(ad, "tiny", integration="none").n == 2  # no correction: small batches are fine


def test_batch_key_candidates_are_offered_never_the_reference(data: AnnData) -> None:
    ad = data.copy()
    ad.obs["orig.ident"] = ad.obs["batch"].astype(str)
    got = batch_key_candidates(ad, exclude=("cell_type",))
    assert got[:2] == ["batch", "orig.ident"] and "cell_type" not in got and "donor_age" not in got


def test_mixing_metrics_and_split_warnings_on_known_layouts() -> None:
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5))])
    b = check_batches(AnnData(np.zeros((200, 1)), obs=pd.DataFrame(
        {"s": pd.Categorical(np.repeat(["A", "B"], 100))}, index=[str(i) for i in range(200)])), "s")
    apart = mixing_metrics(z, b)
    assert apart["same_batch_share"] > 0.99 and apart["ilisi"] < 1.1
    mixed = mixing_metrics(z[rng.permutation(200)], b)
    assert mixed["same_batch_share"] < 0.7 and mixed["ilisi"] > 1.5
    labels = np.repeat([0, 1], 100)
    assert len(split_warnings(labels, b)) == 2  # each cluster is one sample that holds half of the cells
    assert split_warnings(labels, b, sample_share=0.4) == []
    labels = np.r_[np.zeros(100, int), np.ones(80, int), np.full(20, 2)]
    b2 = check_batches(AnnData(np.zeros((200, 1)), obs=pd.DataFrame(
        {"s": pd.Categorical(np.r_[np.repeat("A", 180), np.repeat("B", 20)])}, index=[str(i) for i in range(200)])),
        "s", integration="none")
    assert split_warnings(labels, b2) == ["cluster 2 is 100% s 'B' (which holds 10% of the cells): a batch effect "
                                          "or a s-specific population"]


def test_read_many_joins_files_with_their_names_as_samples(tmp_path) -> None:
    from scclust_core.samples import read_many

    a, b = batched(60, seed=1), batched(60, seed=2)
    b = b[:, 10:].copy()  # the second file lacks the first 10 genes
    pa, pb = tmp_path / "donor_A.h5ad", tmp_path / "donor_B.h5ad"
    a.write_h5ad(pa)
    b.write_h5ad(pb)
    got = read_many([pa, pb])
    assert list(got.obs["sample"].cat.categories) == ["donor_A", "donor_B"] and got.n_obs == 240
    assert got.obs_names.is_unique and got.n_vars == 140
    assert got.uns["scclust_samples"]["genes_not_in_every_file"] == {"donor_A": 10, "donor_B": 0}
    union = read_many([pa, pb.read_bytes()], filenames=[None, "donor_B.h5ad"], join="outer", names=["x", "y"])
    assert union.n_vars == 150 and list(union.obs["sample"].cat.categories) == ["x", "y"]
    other = b.copy()
    other.var_names = [f"ENS{i}" for i in range(other.n_vars)]
    other.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(ValueError, match="share no gene"):
        read_many([pa, tmp_path / "c.h5ad"])
    with pytest.raises(ValueError, match="at least two files"):
        read_many([pa])


def test_doublets_are_flagged_per_sample_never_dropped_silently() -> None:
    from scclust_core.samples import doublet_clusters, drop_doublets, flag_doublets

    ad = batched(150, seed=3)
    table = flag_doublets(ad, batch_key="batch")
    assert list(table["sample"]) == ["a", "b"] and table["cells"].sum() == ad.n_obs
    assert ad.obs["doublet_score"].between(0, 1).all() and ad.obs["predicted_doublet"].dtype == bool
    assert ad.n_obs == 300
    kept = drop_doublets(ad)
    assert kept.n_obs == 300 - int(ad.obs["predicted_doublet"].sum())
    assert doublet_clusters(["0"] * 8 + ["1"] * 2, [False] * 8 + [True] * 2) == {"1": 1.0}
    with pytest.raises(ValueError, match="too small"):
        flag_doublets(batched(30), batch_key="batch")
