"""Fixtures for the app tests: a tiny synthetic dataset and a workspace holding a finished K-means run."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import workspace_with_run

from scclust_core import datasets
from scclust_core.methods import get_method
from scclust_core.workspace import Workspace

TEST_WS_ID = "0123456789abcdef0123456789abcdef"  # ids are 128-bit hex tokens (see scclust_core.workspace)


@pytest.fixture(autouse=True)
def _apptest_mode(monkeypatch):
    """AppTest always runs Streamlit's old pages/ mode: let pages render directly (see ui.common.page_setup)."""
    monkeypatch.setenv("SCCLUST_APPTEST", "1")


@pytest.fixture(scope="session")
def _tiny_session():
    return datasets.synthetic(150, 80, 3, seed=0)


@pytest.fixture
def tiny(_tiny_session):
    """150 cells × 80 genes of counts, 3 clusters in obs['cell_type'] (fresh copy)."""
    return _tiny_session.copy()


@pytest.fixture
def ws_root(tmp_path, monkeypatch):
    root = tmp_path / "workspaces"
    monkeypatch.setenv("SCCLUST_WORKSPACES", str(root))
    return root


def kmeans_config(k: int = 3):
    return get_method("kmeans").Config.from_preset(None, n_clusters=k, n_top_genes=60, n_pcs=10, n_init=2)


@pytest.fixture
def kmeans_cfg():
    """Factory of a quick K-means config: ``kmeans_cfg(k=3)``."""
    return kmeans_config


@pytest.fixture(scope="session")
def _finished_template(tmp_path_factory, _tiny_session):
    """A workspace (built once) with the tiny dataset, reference 'cell_type' and one finished kmeans run."""
    root = tmp_path_factory.mktemp("ws_template")
    _, run_id = workspace_with_run(Workspace(TEST_WS_ID, root), _tiny_session, "kmeans", kmeans_config())
    return root, run_id



@pytest.fixture
def finished_ws(_finished_template, ws_root):
    """(Workspace, run_id) copied fresh for each test under $SCCLUST_WORKSPACES."""
    src_root, run_id = _finished_template
    shutil.copytree(src_root / TEST_WS_ID, ws_root / TEST_WS_ID)
    return Workspace(TEST_WS_ID, ws_root), run_id
