"""A new method is one file and one import line: every page, the CLI, the bench, the estimate and the contract
tests pick it up without another edit.

The toy method (``tests/plugins/toy_method.py``) is registered through ``$SCCLUST_METHOD_PLUGINS`` in child
processes only, so this test process's registry (which other tests enumerate) stays as shipped.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest

from helpers import synthetic_counts

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, SCCLUST_METHOD_PLUGINS="toy_method", SCCLUST_WORKSPACES=str(tmp_path / "ws"),
               SCCLUST_APPTEST="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _run(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "counts.h5ad"
    synthetic_counts(n_cells=150, n_genes=60, k=3, seed=0, strength=6.0).write_h5ad(path)
    return path


def test_cli_lists_and_runs_the_new_method(data_file: Path, tmp_path: Path) -> None:
    assert "toy " in _run(["-m", "scclust_core", "methods"], tmp_path).stdout
    out = tmp_path / "out.h5ad"
    _run(["-m", "scclust_core", "cluster", str(data_file), "--method", "toy", "--preset", "tiny",
          "--n-clusters", "3", "--out", str(out)], tmp_path)
    back = ad.read_h5ad(out)
    assert back.obs["toy"].nunique() == 3 and back.obsm["X_toy"].shape == (150, 8)


def test_bench_runs_the_new_method(data_file: Path, tmp_path: Path) -> None:
    rows_csv = tmp_path / "bench.csv"
    _run(["-m", "scclust_core", "bench", "--data", str(data_file), "--methods", "toy", "--preset", "tiny",
          "--out", str(rows_csv)], tmp_path)
    rows = list(csv.DictReader(rows_csv.open()))
    assert [r["method"] for r in rows] == ["toy"] and rows[0]["status"] == "completed" and float(rows[0]["ari"]) > 0.5


def test_the_contract_tests_cover_the_new_method(tmp_path: Path) -> None:
    done = _run(["-m", "pytest", "-q", "-p", "toy_method", "tests/test_methods_contract.py", "-k", "toy",
                 "-p", "no:cacheprovider"], tmp_path, timeout=600)
    tail = done.stdout.strip().splitlines()[-1]
    assert "passed" in tail and "failed" not in tail and int(tail.split()[0]) >= 4, done.stdout[-1500:]


_PAGE_SCRIPT = r"""
import sys
from streamlit.testing.v1 import AppTest
from helpers import synthetic_counts
from scclust_core.workspace import Workspace

ws = Workspace.open("toypage000000001")
ws.set_dataset(synthetic_counts(150, 60, 3, seed=0), "toy data")
at = AppTest.from_file("app.py", default_timeout=120)
at.query_params["ws"] = ws.id
at.switch_page("pages/2_cluster.py").run()
pick = at.selectbox(key="method_pick")
assert "toy" in pick.options[-1], pick.options
pick.set_value("toy").run()
assert not at.exception, at.exception
texts = " ".join(str(e.value) for e in [*at.markdown, *at.info, *at.caption])
assert "A linear autoencoder of the top genes" in texts, texts[:2000]
assert any("Estimated:" in i.value and "150 cells" in i.value for i in at.info), [i.value for i in at.info]

print("page ok")
"""


def test_the_cluster_page_offers_the_new_method_with_its_card_and_estimate(tmp_path: Path) -> None:
    done = _run(["-c", _PAGE_SCRIPT], tmp_path)
    assert "page ok" in done.stdout
