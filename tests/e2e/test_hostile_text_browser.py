"""In a real Chromium: a workspace whose dataset name, annotation column, categories, gene, cell and cluster names
hold Markdown images and links shows them as text on every page; the browser never fetches their URLs."""
from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import HOSTILE_COLUMN, HOSTILE_DATASET_NAME, MD_IMAGE, hostile_adata

pytestmark = pytest.mark.e2e

APP = "[data-testid='stApp']"
WS_ID = "0badc0de0badc0de0badc0de0badc0de"
EVIL = re.compile(r"127\.0\.0\.1:9/|evil-")
PAGES = ["Cluster", "Explore", "Markers", "Compare", "Export"]


def _hostile_workspace(root) -> None:
    from scclust_core import datasets
    from scclust_core.jobs import TrainingJob
    from scclust_core.methods import get_method
    from scclust_core.workspace import Workspace

    ws = Workspace(WS_ID, root)
    ad = hostile_adata(datasets.synthetic(150, 80, 3, seed=0))
    ws.set_dataset(ad.copy(), HOSTILE_DATASET_NAME)
    ws.set_reference(HOSTILE_COLUMN)
    cfg = get_method("kmeans").Config.from_preset(None, n_clusters=3, n_top_genes=60, n_pcs=10, n_init=2)
    job = TrainingJob(ad, "kmeans", cfg, runs_root=ws.runs_dir, label_key=HOSTILE_COLUMN, workspace=ws.id).start()
    assert job.join(120) and job.status == "completed", job.error
    np.save(ws.cache_dir / f"{job.run_id}_umap.npy", job.result.full_embedding()[:, :2].astype(np.float32))
    ws.set_edits(job.run_id, {"0": "![r](http://127.0.0.1:9/evil-rename.png)"})


def _idle(page, timeout=90_000) -> None:
    page.wait_for_selector(f"{APP}[data-test-script-state='notRunning']", timeout=timeout)


def _no_markup(page, where: str) -> None:
    imgs = [page.locator("img").nth(i).get_attribute("src") or "" for i in range(page.locator("img").count())]
    assert not [s for s in imgs if EVIL.search(s)], (where, imgs)
    assert page.locator("a[href^='javascript:' i]").count() == 0, where
    assert page.locator("strong", has_text=re.compile(r"^(bold|b)$")).count() == 0, where


def test_hostile_names_are_text_and_nothing_is_fetched(server, browser, shot):
    from playwright.sync_api import expect

    _hostile_workspace(server.workspaces)
    requests: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.on("request", lambda r: requests.append(r.url))
    page.set_default_timeout(90_000)
    try:
        page.goto(f"{server.url}/?ws={WS_ID}")
        page.wait_for_selector(APP)
        # the Data page: heading and sidebar carry the dataset name, the caption the reference's categories
        expect(page.get_by_role("heading", name=HOSTILE_DATASET_NAME)).to_be_visible()
        expect(page.locator("[data-testid='stSidebar']").get_by_text(HOSTILE_DATASET_NAME)).to_be_visible()
        expect(page.get_by_text(f"{HOSTILE_COLUMN}: 3 categories").first).to_be_visible()
        expect(page.get_by_text(MD_IMAGE).first).to_be_visible()
        _idle(page)
        _no_markup(page, "Data")
        for title in PAGES:
            page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=title, exact=True).click()
            page.get_by_role("heading", name=re.compile(title)).first.wait_for()
            _idle(page)
            _no_markup(page, title)
        page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Cluster", exact=True).click()
        _idle(page)
        expect(page.get_by_text(f"Same as {HOSTILE_COLUMN} (3)").first).to_be_visible()  # a radio option
    except Exception:
        shot(page, "hostile_failure")
        raise
    finally:
        page.close()
    assert not [u for u in requests if EVIL.search(u)], [u for u in requests if EVIL.search(u)]
