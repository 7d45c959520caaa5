import numpy as np
import pandas as pd
import pytest

from scclust_core import markers


def test_rank_markers_finds_the_planted_genes(tiny):
    labels = tiny.obs["cell_type"]
    df = markers.rank_markers(tiny, labels, n_genes=5)
    assert list(df.columns) == markers.COLUMNS
    assert set(df["cluster"]) == set(labels.cat.categories)
    for cl, sub in df.groupby("cluster"):
        planted = set(tiny.var_names[tiny.var["marker_of"].astype(str) == cl])
        assert set(sub["gene"]) <= planted, cl  # the top genes are the cluster's own markers
        assert (sub["logfoldchange"] > 0).all() and (sub["pval_adj"] < 0.01).all()
        assert (sub["pct_in"] >= sub["pct_out"]).all()
    assert tiny.X.max() > 1  # counts untouched


def test_rank_markers_merged_labels_and_errors(tiny):
    lab = tiny.obs["cell_type"].astype(str).replace({"type_1": "type_0"})
    lab.iloc[:5] = np.nan  # cells without a label are left out
    df = markers.rank_markers(tiny, pd.Categorical(lab), n_genes=3)
    assert set(df["cluster"]) == {"type_0", "type_2"}
    with pytest.raises(ValueError, match="at least two clusters"):
        markers.rank_markers(tiny, ["a"] * tiny.n_obs)


def test_expression_summary_and_long(tiny):
    ln = markers.lognormalized(tiny)
    genes = list(tiny.var_names[:4])
    mean, frac = markers.expression_summary(ln, tiny.obs["cell_type"], genes)
    assert mean.shape == (3, 4) and frac.values.max() <= 1
    long = markers.expression_long(ln, tiny.obs["cell_type"], genes[:2])
    assert len(long) == 2 * tiny.n_obs and set(long.columns) == {"cluster", "gene", "expression"}
