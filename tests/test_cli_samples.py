"""CLI for several samples (inputs, batch key, integration, doublets, subsets) and cell-type naming (annotate)."""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from scclust_core.cli import main

FAST = ["--set", "n_top_genes=100", "--set", "n_pcs=10"]


def sample(seed: int, n: int = 150, shift: float = 1.0, doublets: int = 0) -> AnnData:
    """Three types (each raises its own 20 marker genes ×6) in one sample; ``shift`` scales a fixed third of the
    genes (a batch effect); ``doublets`` cells are sums of two cells of different types."""
    rng = np.random.default_rng(seed)
    n_genes = 150
    types = np.arange(n) % 3
    mu = np.tile(np.random.default_rng(99).gamma(2.0, 0.5, n_genes), (n, 1))
    for t in range(3):
        mu[types == t, t * 20:(t + 1) * 20] *= 6
    batch_genes = np.random.default_rng(7).choice(n_genes, n_genes // 3, replace=False)
    mu[:, batch_genes] *= shift
    x = rng.poisson(mu).astype(np.float32)
    if doublets:
        a, b = np.flatnonzero(types == 0)[:doublets], np.flatnonzero(types == 1)[:doublets]
        x[a] = x[a] + x[b]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{t}" for t in types])},
                       index=[f"s{seed}_c{i}" for i in range(n)])
    out = AnnData(sp.csr_matrix(x), obs=obs)
    out.var_names = [f"Gene{i:03d}" for i in range(n_genes)]
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("samples")
    a, b, c = sample(0), sample(1, shift=2.5), sample(2, shift=0.5)
    a.write_h5ad(d / "donor_a.h5ad")
    b.write_h5ad(d / "donor_b.h5ad")
    pd.DataFrame(c.X.toarray().astype(int), index=c.obs_names, columns=c.var_names).to_csv(d / "donor_c.csv")
    both = ad.concat([a, b], label="batch", keys=["a", "b"])
    both.write_h5ad(d / "batched.h5ad")
    sample(3, n=300, doublets=25).write_h5ad(d / "with_doublets.h5ad")
    markers = d / "markers.csv"
    markers.write_text("cell_type,gene,weight\n" + "".join(
        f"T{t},gene{t * 20 + j:03d},1\n" for t in range(3) for j in range(5)))  # lower case: matched ignoring case
    (d / "markers.gmt").write_text("".join(
        f"T{t}\tdesc\t" + "\t".join(f"Gene{t * 20 + j:03d}" for j in range(5)) + "\n" for t in range(3)))
    return {"a": d / "donor_a.h5ad", "b": d / "donor_b.h5ad", "c": d / "donor_c.csv", "batched": d / "batched.h5ad",
            "doublets": d / "with_doublets.h5ad", "markers": markers, "gmt": d / "markers.gmt", "dir": d}


def kmeans(*extra: str, k: int = 3) -> list[str]:
    return ["--method", "kmeans", "--n-clusters", str(k), *FAST, *extra]


@pytest.fixture(scope="module")
def clustered(files) -> Path:
    """batched.h5ad clustered with K-means (K = 3) into obs['kmeans']: the input of subsets and annotate."""
    out = files["dir"] / "clustered.h5ad"
    assert main(["cluster", str(files["batched"]), *kmeans("--batch-key", "batch", "--out", str(out))]) == 0
    return out


def test_several_inputs_are_one_dataset_with_a_sample_column_and_harmony(files, tmp_path, capsys) -> None:
    out = tmp_path / "o.h5ad"
    code = main(["cluster", str(files["a"]), str(files["b"]), str(files["c"]),
                 *kmeans("--out", str(out))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    back = ad.read_h5ad(out)
    assert back.n_obs == 450 and list(back.obs["sample"].cat.categories) == ["donor_a", "donor_b", "donor_c"]
    assert back.uns["kmeans"]["integration"]["method"] == "harmony"
    assert back.uns["kmeans"]["integration"]["batch_key"] == "sample"
    line = next(x for x in captured.out.splitlines() if x.startswith("kmeans:"))
    assert line.index("silhouette=") < line.index("batch_asw=") and "ilisi=" in line and "same_batch_share=" in line
    assert "3 samples in obs['sample']" in captured.err and "integration harmony" in captured.out


def test_batch_key_and_integrate_choices(files, tmp_path, capsys) -> None:
    shares = {}
    for how in ("none", "harmony", "combat"):
        out = tmp_path / f"{how}.h5ad"
        assert main(["cluster", str(files["batched"]), *kmeans("--batch-key", "batch", "--integrate", how,
                                                               "--label-key", "cell_type", "--out", str(out))]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("kmeans:"))
        assert line.index("ari=") < line.index("nmi=") < line.index("batch_asw=") < line.index("ilisi=")
        back = ad.read_h5ad(out)
        assert back.uns["kmeans"]["integration"]["method"] == how
        shares[how] = back.uns["kmeans"]["metrics"]["same_batch_share"]
    assert shares["harmony"] < shares["none"] - 0.2 and shares["combat"] < shares["none"] - 0.2
    out = tmp_path / "bbknn.h5ad"
    assert main(["cluster", str(files["batched"]), "--method", "leiden", *FAST, "--batch-key", "batch",
                 "--integrate", "bbknn", "--out", str(out)]) == 0
    assert ad.read_h5ad(out).uns["leiden"]["integration"]["method"] == "bbknn"
    capsys.readouterr()


@pytest.mark.parametrize("extra, message", [
    (["--batch-key", "donor"], "no batch column 'donor'"),
    (["--integrate", "harmony"], "needs --batch-key"),
    (["--batch-key", "batch", "--integrate", "bbknn"], "kmeans cannot use --integrate bbknn"),
    (["--join", "outer"], "--join applies to several inputs"),
    (["--subset-mode", "reuse"], "--subset-mode needs --subset"),
])
def test_sample_flags_that_cannot_work_exit_2_before_training(files, tmp_path, capsys, monkeypatch, extra,
                                                              message) -> None:
    import scclust_core.methods as methods

    monkeypatch.setattr(methods, "run_method", lambda *a, **k: pytest.fail("trained despite a bad flag"))
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(files["batched"]), *kmeans(*extra, "--out", str(out))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and not out.exists()


def test_doublets_flag_keeps_every_cell_and_remove_drops_the_flagged(files, tmp_path, capsys) -> None:
    flagged, removed = tmp_path / "flag.h5ad", tmp_path / "remove.h5ad"
    assert main(["cluster", str(files["doublets"]), *kmeans("--doublets", "flag", "--out", str(flagged))]) == 0
    back = ad.read_h5ad(flagged)
    assert back.n_obs == 300 and back.obs["predicted_doublet"].dtype == bool
    assert back.obs["doublet_score"].between(0, 1).all()
    n_flagged = int(back.obs["predicted_doublet"].sum())
    capsys.readouterr()
    assert main(["cluster", str(files["doublets"]), *kmeans("--doublets", "remove", "--out", str(removed))]) == 0
    out = capsys.readouterr().out
    assert ad.read_h5ad(removed).n_obs == 300 - n_flagged
    assert f"removed {n_flagged:,} predicted doublets" in out


def test_doublets_per_sample_and_a_sample_too_small_for_scrublet(files, tmp_path, capsys) -> None:
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(files["a"]), str(files["b"]), *kmeans("--doublets", "flag", "--out", str(out))]) == 0
    assert "donor_a" in capsys.readouterr().err and "predicted_doublet" in ad.read_h5ad(out).obs
    small = tmp_path / "small.h5ad"
    sample(5, n=60).write_h5ad(small)
    assert main(["cluster", str(files["a"]), str(small), *kmeans("--doublets", "flag", "--out", str(out))]) == 2
    assert "too small for doublet detection" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["recompute", "reuse"])
def test_subset_splits_one_cluster_and_keeps_every_other_label(clustered, tmp_path, capsys, mode) -> None:
    parent = ad.read_h5ad(clustered)
    target = str(parent.obs["kmeans"].value_counts().index[0])
    out = tmp_path / "sub.h5ad"
    assert main(["cluster", str(clustered), *kmeans("--subset", f"kmeans={target}", "--subset-mode", mode,
                                                    "--out", str(out), k=2)]) == 0
    back = ad.read_h5ad(out)
    sub = back.obs["kmeans_sub"].astype(str)
    inside = (parent.obs["kmeans"].astype(str) == target).to_numpy()
    assert set(sub[inside]) == {f"{target}.0", f"{target}.1"}
    assert (sub[~inside] == parent.obs["kmeans"].astype(str)[~inside]).all()
    assert back.uns["kmeans_sub"]["mode"] == mode
    assert f"mode {mode}" in capsys.readouterr().out


@pytest.mark.parametrize("subset, message", [
    ("kmeans=7", "has no cluster '7'"),
    ("kmeans=0,7", "has no cluster '7'"),
    ("cluster=0", "no column 'cluster'"),
])
def test_subset_bad_labels_are_clear_errors_before_training(clustered, tmp_path, capsys, monkeypatch, subset,
                                                            message) -> None:
    import scclust_core.subcluster as subcluster

    monkeypatch.setattr(subcluster, "subcluster", lambda *a, **k: pytest.fail("trained despite a bad subset"))
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(clustered), *kmeans("--subset", subset, "--out", str(out), k=2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and not out.exists()


@pytest.mark.parametrize("subset", ["kmeans", "kmeans=", "=0"])
def test_subset_syntax_is_checked_by_the_parser(clustered, tmp_path, capsys, subset) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cluster", str(clustered), *kmeans("--subset", subset, "--out", str(tmp_path / "o.h5ad"))])
    assert info.value.code == 2 and "--subset expects KEY=LABEL" in capsys.readouterr().err


def test_subset_too_small_several_inputs_and_reuse_for_a_deep_method_are_refused(clustered, files, tmp_path,
                                                                                   capsys) -> None:
    src = ad.read_h5ad(clustered)
    src.obs["tiny"] = pd.Categorical(["x"] * 5 + ["y"] * (src.n_obs - 5))
    path = tmp_path / "tiny.h5ad"
    src.write_h5ad(path)
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(path), *kmeans("--subset", "tiny=x", "--out", str(out), k=2)]) == 2
    assert "at least 10 are needed" in capsys.readouterr().err
    assert main(["cluster", str(files["a"]), str(files["b"]), *kmeans("--subset", "kmeans=0", "--out", str(out))]) == 2
    assert "one input" in capsys.readouterr().err
    assert main(["cluster", str(clustered), "--method", "contrastive_sc", "--preset", "tiny", "--n-clusters", "2",
                 "--subset", "kmeans=0", "--subset-mode", "reuse", "--out", str(out)]) == 2
    assert "recompute" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("markers", ["markers", "gmt"])
def test_annotate_with_markers_names_the_clusters(clustered, files, tmp_path, capsys, markers) -> None:
    out = tmp_path / "named.h5ad"
    assert main(["annotate", str(clustered), "--groupby", "kmeans", "--markers", str(files[markers]),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    back = ad.read_h5ad(out)
    names = back.obs["kmeans_cell_type"].astype(str)
    truth = back.obs["cell_type"].astype(str).str.replace("type_", "T")
    assert (names == truth).mean() > 0.95 and np.isfinite(back.obs["kmeans_cell_type_score"]).all()
    assert "evidence" in back.uns["kmeans_cell_type"]
    assert "proposed" in printed and "3 of 3 clusters named" in printed


def test_annotate_with_a_reference_labels_every_cell(files, tmp_path, capsys) -> None:
    clustered = tmp_path / "b.h5ad"
    assert main(["cluster", str(files["b"]), *kmeans("--out", str(clustered))]) == 0
    out = tmp_path / "t.h5ad"
    assert main(["annotate", str(clustered), "--reference", str(files["a"]), "--reference-key", "cell_type",
                 "--groupby", "kmeans", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    back = ad.read_h5ad(out)
    acc = (back.obs["transferred_type"].astype(str) == back.obs["cell_type"].astype(str)).mean()
    assert acc > 0.95 and back.obs["transferred_type_confidence"].between(0, 1).all()
    assert back.uns["transferred_type"]["reference_key"] == "cell_type"
    assert "majority" in printed and "purity" in printed and "obs['transferred_type']" in printed


@pytest.mark.parametrize("args, message", [
    ([], "needs either --markers"),
    (["--markers", "bundled:human_immune", "--reference", "REF"], "not both"),
    (["--markers", "bundled:human_immune"], "give --groupby"),
    (["--groupby", "kmeans", "--markers", "bundled:no_such_set"], "No bundled marker set 'no_such_set'"),
    (["--groupby", "kmeans", "--markers", "missing.csv"], "is not a file"),
    (["--groupby", "nope", "--markers", "bundled:human_immune"], "--groupby 'nope' is not in obs"),
    (["--groupby", "kmeans", "--markers", "bundled:human_immune"], "None of the"),
    (["--reference", "REF"], "needs --reference-key"),
    (["--reference", "REF", "--reference-key", "nope"], "no column 'nope'"),
    (["--groupby", "kmeans", "--markers", "bundled:human_immune", "--min-margin", "nan"], "--min-margin"),
])
def test_annotate_bad_input_exits_2_with_a_clear_message(clustered, files, tmp_path, capsys, args, message) -> None:
    args = [str(files["a"]) if a == "REF" else a for a in args]
    out = tmp_path / "o.h5ad"
    assert main(["annotate", str(clustered), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and not out.exists()


def test_annotate_refuses_a_bad_file_and_an_output_that_is_an_input(clustered, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["annotate", str(bad), "--groupby", "kmeans", "--markers", "bundled:human_immune",
                 "--out", str(tmp_path / "o.h5ad")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main(["annotate", str(clustered), "--groupby", "kmeans", "--markers", "bundled:human_immune",
                 "--out", str(clustered)]) == 2
    assert "is the input file" in capsys.readouterr().err
