"""From clusters to cell types: subclustering in both modes, marker-set naming, reference transfer, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from helpers import synthetic_counts
from scclust_core import annotate as an
from scclust_core.methods import run_method
from scclust_core.subcluster import subcluster


def _typed(n: int = 300, seed: int = 0) -> AnnData:
    """Counts of three types, each with its own marker genes named MARKA*, MARKB*, MARKC* (the rest background)."""
    ad = synthetic_counts(n_cells=n, n_genes=120, k=3, seed=seed, strength=8.0)
    block = 120 // 6
    names = [f"bg{i}" for i in range(120)]
    for c, letter in enumerate("ABC"):
        for j in range(block):
            names[c * block + j] = f"MARK{letter}{j}"
    ad.var_names = names
    return ad


@pytest.fixture()
def clustered() -> AnnData:
    ad = _typed()
    run_method(ad, "kmeans", n_clusters=3, n_top_genes=100, n_pcs=10)
    return ad


def test_subcluster_recompute_and_reuse_keep_every_other_label_and_nest(clustered: AnnData) -> None:
    before = clustered.obs["kmeans"].astype(str).copy()
    for mode in ("recompute", "reuse"):
        subcluster(clustered, "kmeans", subset=("kmeans", ["0"]), mode=mode, n_clusters=2, key_added=f"s_{mode}",
                   **({"n_top_genes": 80, "n_pcs": 8} if mode == "recompute" else {}))
        col = clustered.obs[f"s_{mode}"].astype(str)
        inside = (before == "0").to_numpy()
        assert (col[~inside] == before[~inside]).all()
        assert set(col[inside]) == {"0.0", "0.1"}
        assert clustered.uns[f"s_{mode}"]["mode"] == mode and clustered.uns[f"s_{mode}"]["parent_key"] == "kmeans"
    subcluster(clustered, "kmeans", subset=("s_reuse", ["0.1"]), mode="reuse", n_clusters=2, key_added="nested")
    nested = clustered.obs["nested"].astype(str)
    assert {"0.1.0", "0.1.1", "0.0", "1", "2"} == set(nested)


def test_subcluster_with_the_consensus_and_with_leiden(clustered: AnnData) -> None:
    subcluster(clustered, "recommend", subset=("kmeans", ["1", "2"]), mode="reuse", n_clusters=2, key_added="rec")
    assert set(clustered.obs["rec"].astype(str)) == {"0", "1+2.0", "1+2.1"}
    subcluster(clustered, "leiden", subset=("kmeans", ["1"]), mode="reuse", key_added="lei")
    assert (clustered.obs["lei"].astype(str)[clustered.obs["kmeans"] == "0"] == "0").all()


@pytest.mark.parametrize("subset, kw, match", [
    (("nope", ["0"]), {}, "no column"),
    (("kmeans", ["9"]), {}, "no cluster '9'"),
    (("kmeans", []), {}, "at least one cluster"),
    (("kmeans", ["0"]), {"n_clusters": 500}, "not smaller than the subset"),
])
def test_subcluster_bad_input_is_a_clear_error_before_training(clustered, subset, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        subcluster(clustered, "kmeans", subset=subset, **{"n_clusters": 2, **kw})


def test_subcluster_refuses_small_subsets_non_categorical_keys_and_reuse_for_deep_methods(clustered) -> None:
    clustered.obs["tiny"] = pd.Categorical(["a"] * 5 + ["b"] * (clustered.n_obs - 5))
    with pytest.raises(ValueError, match="at least 10"):
        subcluster(clustered, "kmeans", subset=("tiny", ["a"]), n_clusters=2)
    clustered.obs["plain"] = clustered.obs["kmeans"].astype(str)
    with pytest.raises(ValueError, match="not categorical"):
        subcluster(clustered, "kmeans", subset=("plain", ["0"]), n_clusters=2)
    with pytest.raises(ValueError, match="recompute"):
        subcluster(clustered, "contrastive_sc", subset=("kmeans", ["0"]), mode="reuse", n_clusters=2)


def _markers() -> an.MarkerSets:
    csv = "cell_type,gene,weight\n" + "".join(f"type {c},mark{c.lower()}{j},1\n" for c in "ABC" for j in range(4))
    return an.read_marker_sets(csv.encode(), "m.csv")


def test_marker_sets_name_clusters_case_insensitively_and_report_missing_genes(clustered: AnnData) -> None:
    sets = _markers()
    sets.types["type A"]["NOT_A_GENE"] = 1.0
    table = an.propose_names(clustered, "kmeans", sets)
    truth = clustered.obs["cell_type"].astype(str)
    for _, row in table.iterrows():
        major = truth[clustered.obs["kmeans"].astype(str) == row["cluster"]].value_counts().index[0]
        assert row["proposed"] == {"type0": "type A", "type1": "type B", "type2": "type C"}[major]
        assert row["margin"] > 0 and row["supporting_markers"]
    assert table.attrs["missing"]["type A"] == ["NOT_A_GENE"]
    key = an.apply_names(clustered, "kmeans", table, accepted={"0": "my name"})
    assert key == "kmeans_cell_type" and "my name" in set(clustered.obs[key].astype(str))
    assert np.isfinite(clustered.obs["kmeans_cell_type_score"]).all()


def test_a_cluster_with_no_clear_type_stays_unassigned(clustered: AnnData) -> None:
    sets = an.MarkerSets({"type A": {"MARKA0": 1.0}, "background": {"bg100": 1.0, "bg101": 1.0}}, source="t")
    table = an.propose_names(clustered, "kmeans", sets, min_margin=5.0)
    assert set(table["proposed"]) == {an.UNASSIGNED}


def test_marker_files_gmt_and_bundled_sets_read(tmp_path) -> None:
    gmt = tmp_path / "s.gmt"
    gmt.write_text("T cell\tdesc\tCD3E\tCD3D\nB cell\t\tMS4A1\n")
    assert an.read_marker_sets(gmt).types == {"T cell": {"CD3E": 1.0, "CD3D": 1.0}, "B cell": {"MS4A1": 1.0}}
    assert {"human_immune", "mouse_pancreas"} <= set(an.bundled_marker_sets())
    assert "B cell" in an.load_bundled("human_immune").types
    with pytest.raises(ValueError, match="weight"):
        an.read_marker_sets(b"T,CD3E,heavy\n", "m.csv")
    with pytest.raises(ValueError, match="No marker genes"):
        an.read_marker_sets(b"", "m.csv")
    with pytest.raises(ValueError, match="is in the data"):
        an.match_genes(an.MarkerSets({"x": {"ZZZ": 1.0}}), ["a", "b"])


def test_reference_transfer_labels_a_second_sample() -> None:
    ref, qry = _typed(300, seed=1), _typed(240, seed=2)
    tr = an.transfer_labels(qry, ref, "cell_type")
    acc = (tr.labels.astype(str).to_numpy() == qry.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.9 and tr.confidence.between(0, 1).all() and tr.n_shared_genes == 120
    per = tr.per_cluster(qry.obs["cell_type"])
    assert (per["purity"] > 0.8).all()


def test_reference_transfer_bad_input_says_what_to_do() -> None:
    ref, qry = _typed(200, seed=1), _typed(100, seed=2)
    with pytest.raises(ValueError, match="no column"):
        an.transfer_labels(qry, ref, "nope")
    mouse = qry.copy()
    mouse.var_names = [g.swapcase() for g in qry.var_names]
    with pytest.raises(ValueError, match="another species"):
        an.transfer_labels(mouse, ref, "cell_type")
    other = qry.copy()
    other.var_names = [f"ENSG{i:011d}" for i in range(qry.n_vars)]
    with pytest.raises(ValueError, match="gene identifiers"):
        an.transfer_labels(other, ref, "cell_type")
    scaled = qry.copy()
    scaled.X = sp.csr_matrix(np.asarray(qry.X.todense()) - 1.0)
    with pytest.raises(ValueError, match="negative values"):
        an.transfer_labels(scaled, ref, "cell_type")


def test_sub_labels_sort_numbers_before_words_and_negative_only_types_are_never_proposed(clustered) -> None:
    from scclust_core.subcluster import _natural

    assert sorted(["3.10", "3.unassigned", "3.2", "3.0"], key=_natural) == ["3.0", "3.2", "3.10", "3.unassigned"]
    sets = _markers()
    sets.types["only negative"] = {"MARKA0": -1.0}
    table = an.propose_names(clustered, "kmeans", sets)
    assert "only negative" not in set(table["best_type"]) | set(table["second_type"])
    repr(table)  # printable: no frame hidden in attrs
