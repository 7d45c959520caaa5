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


# ------------------------------------------------------------------------------------------------
# hardening: output checked first, strict --transpose, finite --set, read notes, NaN metrics
# ------------------------------------------------------------------------------------------------


def test_unwritable_out_fails_before_training(h5ad_dir, tmp_path, capsys, monkeypatch):
    import scclust_core.io as scio

    def boom(*a, **k):  # reading (and so training) must not start
        raise AssertionError("read before the output was checked")

    monkeypatch.setattr(scio, "read", boom)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "kmeans", "--n-clusters", "3",
                 "--out", str(blocker / "sub" / "out.h5ad")])
    assert code == 2 and "--out" in capsys.readouterr().err
    assert main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "kmeans", "--n-clusters", "3",
                 "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["maybe", "ture", "2", ""])
def test_transpose_parses_strictly(h5ad_dir, tmp_path, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "kmeans", "--transpose", value,
              "--out", str(tmp_path / "o.h5ad")])
    assert info.value.code == 2 and "--transpose expects" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_set_rejected(h5ad_dir, tmp_path, value, capsys):
    code = main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "cicl", "--n-clusters", "3",
                 "--set", f"temperature={value}", "--out", str(tmp_path / "o.h5ad")])
    err = capsys.readouterr().err
    assert code == 2 and "temperature" in err and "finite" in err
    assert not (tmp_path / "o.h5ad").exists()


def test_table_orientation_note_and_unclear_table(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    neutral = pd.DataFrame(rng.poisson(3, (30, 30)), index=[f"r{i}" for i in range(30)],
                           columns=[f"c{j}" for j in range(30)])
    path = tmp_path / "square.csv"
    neutral.to_csv(path)
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(path), "--method", "kmeans", "--n-clusters", "2", "--set", "n_pcs=5",
                 "--out", str(out)]) == 2
    assert "--transpose false/true" in capsys.readouterr().err and not out.exists()
    assert main(["cluster", str(path), "--method", "kmeans", "--n-clusters", "2", "--set", "n_pcs=5",
                 "--transpose", "false", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "read: rows read as cells because transpose=False was given" in captured.err
    assert "on 30 cells" in captured.out


def test_memory_and_os_errors_exit_2(h5ad_dir, tmp_path, capsys, monkeypatch):
    import scclust_core.io as scio

    for exc in (MemoryError(), OSError(28, "No space left on device")):
        def fail(*a, _e=exc, **k):
            raise _e

        monkeypatch.setattr(scio, "read", fail)
        code = main(["cluster", str(h5ad_dir / "toy.h5ad"), "--method", "kmeans", "--n-clusters", "3",
                     "--out", str(tmp_path / "o.h5ad")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and "Traceback" not in err


def test_cluster_nan_metrics_print_na_and_warning(h5ad_dir, tmp_path, capsys):
    src = ad.read_h5ad(h5ad_dir / "toy.h5ad")
    src.obs["only"] = "x"
    path = tmp_path / "one.h5ad"
    src.write_h5ad(path)
    code = main(["cluster", str(path), "--method", "kmeans", "--n-clusters", "3", "--set", "n_top_genes=100",
                 "--set", "n_pcs=10", "--label-key", "only", "--out", str(tmp_path / "o.h5ad")])
    captured = capsys.readouterr()
    assert code == 0 and "ari=n/a" in captured.out and "1.000" not in captured.out
    assert "warning: The reference annotation has a single category" in captured.err


def test_bench_skips_annotation_without_usable_labels(tmp_path, counts_adata, capsys):
    a = counts_adata.copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    a.obs.loc[a.obs_names[1:], "cell_type"] = None  # one labelled cell: nothing to score against
    a.obs["cell_type"] = a.obs["cell_type"].astype("category")
    d = tmp_path / "d"
    d.mkdir()
    a.write_h5ad(d / "one.h5ad")
    assert main(["bench", "--data", str(d), "--methods", "kmeans", "--set", "n_top_genes=100",
                 "--set", "n_pcs=10"]) == 0
    captured = capsys.readouterr()
    assert "skip one.h5ad: the reference annotation has 1 labelled cell" in captured.err
    assert "1.000" not in captured.out


def test_scale_makes_a_larger_thinned_file_with_the_labels(h5ad_dir, tmp_path, capsys):
    out = tmp_path / "big.h5ad"
    assert main(["scale", "--data", str(h5ad_dir / "small.h5ad"), "--cells", "500", "--keep", "0.5",
                 "--out", str(out)]) == 0
    src, big = ad.read_h5ad(h5ad_dir / "small.h5ad"), ad.read_h5ad(out)
    assert big.shape == (500, src.n_vars) and big.obs_names.is_unique
    assert set(big.obs["cell_type"]) <= set(src.obs["cell_type"])
    assert big.X.sum() / big.n_obs == pytest.approx(0.5 * src.X.sum() / src.n_obs, rel=0.15)  # thinned by half
    assert (big.X.data == big.X.data.round()).all() and big.uns["scclust_scaled"]["keep"] == 0.5
    assert "500 cells" in capsys.readouterr().out


def test_scale_refuses_non_counts(h5ad_dir, tmp_path, capsys):
    a = ad.read_h5ad(h5ad_dir / "small.h5ad")
    a.X = (a.X.toarray() if hasattr(a.X, "toarray") else a.X) * 0.5 + 0.25
    a.write_h5ad(tmp_path / "lognorm.h5ad")
    assert main(["scale", "--data", str(tmp_path / "lognorm.h5ad"), "--cells", "10", "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "raw counts" in capsys.readouterr().err


def test_profile_prints_where_the_time_goes(h5ad_dir, capsys):
    assert main(["profile", "--data", str(h5ad_dir / "small.h5ad"), "--method", "contrastive_sc", "--preset", "tiny",
                 "--n-clusters", "3", "--set", "epochs=2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: float(line.split()[-4]) for line in out.splitlines()[1:] if line.strip().endswith("%")
            and len(line.split()) >= 4 and line.split()[0] in ("total", "epochs", "prepare")}
    assert set(rows) == {"total", "epochs", "prepare"} and 0 < rows["epochs"] <= rows["total"]
    for bucket in ("before first epoch", "live views", "K-means", "torch compute", "data handling"):
        assert bucket in out
