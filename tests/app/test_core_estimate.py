"""Time/memory estimates before Start and the label-free default K."""
import numpy as np
import pytest

from scclust_core import datasets, estimate
from scclust_core.graph import leiden_k
from scclust_core.methods import get_method, list_methods


def test_fit_rates_recovers_a_linear_cost():
    rows = [dict(method="m", preset="p", n_cells=n, n_genes=g, seconds=2 + 3 * n / 1e3 + 0.5 * n * g / 1e6,
                 peak_rss_mb=500 + 4 * n * g / 1e6) for n, g in [(500, 1000), (2000, 2000), (8000, 1000), (1000, 15000)]]
    rows.append(dict(method="m", preset="p", n_cells=10, n_genes=10, seconds="", status="failed"))
    r = estimate.fit_rates(rows)[("m", "p")]
    assert r.n_runs == 4 and r.max_rel_error < 1e-3
    assert r.seconds(4000, 3000) == pytest.approx(2 + 12 + 6, rel=1e-6)
    assert r.mib(4000, 3000) == pytest.approx(500 + 48, rel=1e-6)


def test_every_method_fits_its_own_measurements_within_a_factor_of_two():
    """Each method's cost model reproduces its measured runs within ×2 (the classic baselines, runs of under a
    minute timed on a shared CPU: within ×2 or 25 s). The rates come from the method classes, not from a table here."""
    fitted = 0
    for name in list_methods():
        m = get_method(name)
        rates = estimate.rates_for(m)
        for r in m.cost.runs:
            if r.seconds is None:  # a memory-only measurement
                continue
            fit = rates[r.preset].seconds(r.cells, r.genes)
            fitted += 1
            if m.kind == "classic":
                assert 0.5 <= fit / r.seconds <= 2.0 or (r.seconds < 60 and abs(fit - r.seconds) < 25), (name, r, fit)
            else:
                assert 0.5 <= fit / r.seconds <= 2.0, (name, r, fit)
    assert fitted >= 50


def test_estimate_scales_with_work_units_and_says_when_it_cannot():
    csc = get_method("contrastive_sc")
    base = estimate.estimate(csc, "cpu", 3000, 2000)
    assert base.seconds > 0 and "measured" in base.note
    cfg = csc.Config.from_preset("cpu", epochs=60).to_dict()
    double = estimate.estimate(csc, "cpu", 3000, 2000, config=cfg)
    assert double.seconds > 1.5 * base.seconds and "60 work units" in double.note
    gpu = estimate.estimate(csc, "cpu", 3000, 2000, device="cuda")
    assert gpu.seconds is None and "GPU" in gpu.note
    assert get_method("scamac").cost.work_units({"epochs": 7, "de_epochs": 3, "fkm_epochs": 2}) == 35
    assert get_method("kmeans").cost.work_units({"n_init": 10}) is None
    with pytest.raises(ValueError):
        estimate.estimate(get_method("kmeans"), None, 0, 10)
    assert estimate.format_seconds(8.2) == "8 s" and estimate.format_seconds(90) == "1.5 min"


def test_estimate_names_no_method():
    """estimate.py combines the methods' own cost models: no method name and no per-method table in it."""
    from pathlib import Path

    text = Path(estimate.__file__).read_text()
    for name in list_methods():
        assert f'"{name}"' not in text and f"'{name}'" not in text, name
    assert "MEASURED" not in text


def test_leiden_k_is_label_free_and_sensible():
    ad = datasets.synthetic(300, 100, 4, seed=1)
    k1 = leiden_k(ad)
    ad.obs["cell_type"] = "scrambled"  # labels play no part
    assert leiden_k(ad) == k1 and 2 <= k1 <= 12
    with pytest.raises(ValueError):
        leiden_k(ad[:2].copy())


def test_leiden_k_looks_at_a_bounded_subsample():
    ad = datasets.synthetic(600, 100, 4, seed=2)
    full = leiden_k(ad, max_cells=10_000)
    sub = leiden_k(ad, max_cells=300)
    assert 2 <= sub <= 12 and abs(sub - full) <= 3
