"""End to end in a real headless Chromium: demo → contrastive-sc training with live curves and snapshots →
Explore, Markers, Compare → download the labeled h5ad → a malformed upload → server restart keeps the run."""
from __future__ import annotations

import re
import time

import pytest

from scclust_core.methods import list_methods

pytestmark = pytest.mark.e2e

APP = "[data-testid='stApp']"


def _goto_page(page, title: str) -> None:
    # exact: before app.py has run, Streamlit briefly lists the pages/ files in lower case (without ?ws=)
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=re.compile(title)).first.wait_for(timeout=60_000)
    page.wait_for_url(re.compile(r"[?&]ws=[a-z0-9]+"), timeout=30_000)  # the workspace stays in the address


def _idle(page, timeout=60_000) -> None:
    page.wait_for_selector(f"{APP}[data-test-script-state='notRunning']", timeout=timeout)


def test_full_flow(server, browser, shot, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    page = browser.new_page(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
    try:
        _flow(page, server, shot, tmp_path)
    except Exception:
        shot(page, "failure")
        raise
    finally:
        page.close()


def _flow(page, server, shot, tmp_path):
    from playwright.sync_api import expect

    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.wait_for_selector(APP)
    expect(page.get_by_role("button", name=re.compile("Open the PBMC demo"))).to_be_visible()
    ws_url = page.url
    assert "ws=" in ws_url

    # --- data: the demo
    page.get_by_role("button", name=re.compile("Open the PBMC demo")).click()
    expect(page.get_by_text("PBMC demo (700 cells)").first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("bulk_labels:").first).to_be_visible()
    _idle(page)
    shot(page, "1_data")

    # --- cluster: contrastive-sc, a few epochs, live curves and snapshots while it trains
    _goto_page(page, "Cluster")
    if "contrastive_sc" not in list_methods():
        pytest.skip("contrastive_sc is not registered yet: the training part of the e2e flow needs it")
    page.get_by_role("textbox", name="Number of HVGs").wait_for()
    page.get_by_role("textbox", name="Number of HVGs").fill("300")
    page.get_by_role("textbox", name="Number of HVGs").press("Tab")
    page.get_by_role("spinbutton", name="Epochs").fill("30")
    page.get_by_role("spinbutton", name="Epochs").press("Tab")
    page.get_by_text(re.compile(r"Advanced parameters")).click()
    page.get_by_role("spinbutton", name="Snapshot every").fill("2")
    page.get_by_role("spinbutton", name="Snapshot every").press("Tab")
    _idle(page)
    page.get_by_role("button", name=re.compile("Start training")).click()
    expect(page.get_by_text(re.compile(r"Training \*?\*?contrastive_sc|Training contrastive_sc"))).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Loss per component").first).to_be_visible(timeout=120_000)
    live = page.get_by_text(re.compile(r"Embedding snapshots \(([2-9]|\d\d) so far\)"))
    expect(live.first).to_be_visible(timeout=150_000)
    # the Fig.-3 grid itself is drawn (not only its caption) while the run is still going
    grid = page.locator(".js-plotly-plot:has-text('Embedding snapshots during training')")
    expect(grid.first).to_be_visible(timeout=30_000)
    assert page.get_by_role("button", name="Cancel").is_visible(), "snapshots must be seen while training runs"
    # no scroll_into_view here: the live fragment re-renders every second and detaches the element;
    # the screenshot is full-page anyway
    shot(page, "2_cluster_live")
    expect(page.get_by_text(re.compile(r"contrastive_sc\s*finished")).first).to_be_visible(timeout=240_000)
    _idle(page)
    shot(page, "2_cluster_done")

    # --- explore (UMAP of the learned embedding), markers, compare
    _goto_page(page, "Explore")
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile("UMAP of the learned embedding")).first).to_be_visible(timeout=120_000)
    _idle(page, 120_000)
    shot(page, "3_explore")
    _goto_page(page, "Markers")
    expect(page.get_by_role("button", name="Download markers (CSV)")).to_be_visible(timeout=120_000)
    _idle(page, 120_000)
    shot(page, "4_markers")
    _goto_page(page, "Compare")
    expect(page.locator(".js-plotly-plot .sankey").first).to_be_attached(timeout=60_000)
    _idle(page)
    shot(page, "5_compare")

    # --- export: the labeled h5ad reads back with anndata
    _goto_page(page, "Export")
    page.get_by_role("button", name="Build the .h5ad").click()
    dl_button = page.get_by_role("button", name=re.compile(r"Download .*_scclust\.h5ad"))
    expect(dl_button).to_be_visible(timeout=120_000)
    with page.expect_download() as info:
        dl_button.click()
    path = tmp_path / "export.h5ad"
    info.value.save_as(path)
    shot(page, "6_export")
    import anndata
    import pandas as pd

    back = anndata.read_h5ad(path)
    assert back.n_obs == 700 and "X_umap" in back.obsm
    cols = [c for c in back.obs.columns if c.startswith("contrastive_sc_")]
    assert cols and isinstance(back.obs[cols[0]].dtype, pd.CategoricalDtype)

    # --- a malformed upload gives a message, the app keeps working
    _goto_page(page, "Data")
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"this is not an h5ad file at all\n" * 10)
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(bad))
    expect(page.get_by_text(re.compile("Could not read")).first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("PBMC demo (700 cells)").first).to_be_visible()
    shot(page, "7_bad_upload")

    # --- a server restart keeps the finished run
    server.restart()
    query = ws_url.split("?", 1)[1]
    page.goto(f"{server.url}/cluster?{query}")  # a deep link as the first request of the new server
    page.wait_for_selector(APP)
    expect(page.get_by_role("heading", name="Cluster").first).to_be_visible()
    expect(page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Explore", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"contrastive_sc\s*finished")).first).to_be_visible(timeout=90_000)
    _idle(page)
    shot(page, "8_after_restart")
