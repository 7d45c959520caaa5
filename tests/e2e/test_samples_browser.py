"""End to end in Chromium: three files (h5ad, CSV, zipped 10x folder) uploaded at once become one dataset whose
samples are the file names; a K-means run whose clusters split by sample shows the composition bar and the
warning on Compare; files without a shared gene are refused and the data stays."""
from __future__ import annotations

import re

import anndata
import pytest
from helpers import batch_split_samples, sample_file_bytes, synthetic_counts

pytestmark = pytest.mark.e2e

APP = "[data-testid='stApp']"


def _idle(page, timeout=120_000) -> None:
    page.wait_for_selector(f"{APP}[data-test-script-state='notRunning']", timeout=timeout)


def _goto_page(page, title: str) -> None:
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=re.compile(title)).first.wait_for(timeout=60_000)
    _idle(page)


def _pick(page, label: str, option: str) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=re.compile(option)).first.click()
    _idle(page)


def _write_files(folder, names: list[str], parts) -> list[str]:
    paths = []
    for name, part in zip(names, parts):
        path = folder / name
        path.write_bytes(sample_file_bytes(part, name.rsplit(".", 1)[-1]))
        paths.append(str(path))
    return paths


def test_three_files_become_samples_and_compare_shows_the_split(server, browser, shot, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.set_default_timeout(90_000)
    try:
        _flow(page, server, shot, tmp_path)
    except Exception:
        shot(page, "samples_failure")
        raise
    finally:
        page.close()


def _flow(page, server, shot, tmp_path) -> None:
    from playwright.sync_api import expect

    page.goto(server.url)
    page.wait_for_selector(APP)
    _idle(page)
    uploader = page.locator("[data-testid='stFileUploader'] input[type='file']")
    uploader.set_input_files(_write_files(tmp_path, ["donorA.h5ad", "donorB.csv", "donorC.zip"],
                                          batch_split_samples()))
    expect(page.get_by_text("3 files: join them into one dataset").first).to_be_visible()
    page.get_by_role("button", name="Join the 3 files").click()
    expect(page.get_by_text("3 samples (donorA, donorB, donorC)").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"only the genes every file has were kept — 295 genes")).first).to_be_visible()
    _idle(page)
    ws_id = re.search(r"ws=([0-9a-f]{32})", page.url).group(1)
    ad = anndata.read_h5ad(server.workspaces / ws_id / "dataset.h5ad")
    assert list(ad.obs["sample"].cat.categories) == ["donorA", "donorB", "donorC"] and ad.n_obs == 400
    shot(page, "samples_1_data")

    _goto_page(page, "Cluster")
    _pick(page, "Method", r"^kmeans — ")
    expect(page.get_by_text(re.compile(r"Integration of the 3 samples in sample")).first).to_be_visible()
    _pick(page, "Integration of the 3 samples", r"^none$")
    page.get_by_role("button", name=re.compile("Start training")).click()
    expect(page.get_by_text(re.compile(r"kmeans\s*finished")).first).to_be_visible(timeout=240_000)
    _idle(page)

    _goto_page(page, "Compare")
    expect(page.get_by_text(re.compile(r"cluster \S+ is 100% sample 'donor[ABC]'")).first).to_be_visible()
    bar = page.locator(".js-plotly-plot").filter(has_text="Sample composition of each cluster")
    expect(bar.first).to_be_attached()
    expect(page.locator("[data-testid='stMetricLabel']").filter(has_text="Batch ASW").first).to_be_visible()
    shot(page, "samples_2_compare")

    _goto_page(page, "Data")  # files without a shared gene: a clear message, the joined data stays
    a, b = synthetic_counts(60, 40, seed=1), synthetic_counts(60, 40, seed=2)
    b.var_names = [f"other{i}" for i in range(40)]
    uploader = page.locator("[data-testid='stFileUploader'] input[type='file']")
    uploader.set_input_files(_write_files(tmp_path, ["x.h5ad", "y.h5ad"], [a, b]))
    page.get_by_role("button", name="Join the 2 files").click()
    expect(page.get_by_text(re.compile("Could not join the files: The files share no gene")).first).to_be_visible()
    expect(page.get_by_text("3 samples (donorA, donorB, donorC)").first).to_be_visible()
    shot(page, "samples_3_no_shared_gene")
