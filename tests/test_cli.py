from __future__ import annotations

import csv
import subprocess
import sys

import anndata as ad
import pytest

from scclust_core.cli import main


@pytest.fixture
def h5ad_dir(tmp_path, counts_adata):
    d = tmp_path / "data"
    d.mkdir()
    counts_adata.write_h5ad(d / "toy.h5ad")
    other = counts_adata[:150].copy()
    other.write_h5ad(d / "small.h5ad")
    return d


def test_methods_lists_registered(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "leiden" in out and "kmeans" in out and "baseline" in out


def test_cluster_writes_labelled_h5ad(h5ad_dir, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "kmeans", "--n-clusters", "3",
                 "--set", "n_top_genes=100", "--set", "n_pcs=10", "--label-key", "cell_type",
                 "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert code == 0
    back = ad.read_h5ad(out)
    assert back.obs["kmeans"].dtype.name == "category" and back.obs["kmeans"].nunique() == 3
    assert "X_kmeans" in back.obsm and back.uns["kmeans"]["metrics"]["ari"] > 0.95
    assert "3 clusters" in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_cluster_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.foo"
    bad.write_text("hello")
    assert main(["cluster", str(bad), "--method", "kmeans", "--n-clusters", "3", "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["cluster", str(bad), "--method", "nope", "--out", "x.h5ad"]) == 2


def test_bench_rows_and_summary(h5ad_dir, tmp_path, capsys):
    out = tmp_path / "res.csv"
    code = main(["bench", "--data", str(h5ad_dir), "--methods", "kmeans,leiden", "--seeds", "2",
                 "--set", "n_top_genes=100", "--set", "n_pcs=10", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 2 * 2
    for col in ("dataset", "method", "seed", "n_cells", "n_genes", "k", "ari", "nmi", "ca", "seconds", "peak_rss_mb"):
        assert col in rows[0]
    assert {r["dataset"] for r in rows} == {"toy", "small"} and all(r["k"] == "3" for r in rows)
    assert all(float(r["ari"]) > 0.8 for r in rows if r["method"] == "kmeans")
    captured = capsys.readouterr()
    assert "| toy | kmeans |" in captured.out and "±" in captured.out
    assert "[1/8]" in captured.err


def test_bench_unknown_set_key_fails(h5ad_dir, capsys):
    assert main(["bench", "--data", str(h5ad_dir), "--methods", "kmeans", "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "scclust_core", "methods"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "kmeans" in out.stdout
