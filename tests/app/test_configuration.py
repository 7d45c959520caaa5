"""A wrong setting is reported on the page at server start (st.error), not as a traceback or a stuck job."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_app_shows_a_wrong_setting_instead_of_a_traceback(ws_root, monkeypatch):
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "two")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "SCCLUST_MAX_TRAININGS" in errors and "'two'" in errors, errors
    assert not ws_root.exists()  # the page stopped before it opened anything


def test_pages_opened_directly_show_it_too(ws_root, monkeypatch):
    monkeypatch.setenv("SCCLUST_JOB_ISOLATION", "procces")
    page = str(Path(APP).parent / "pages" / "2_cluster.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    assert not at.exception and any("SCCLUST_JOB_ISOLATION" in e.value for e in at.error)
