"""After a cancel the Cluster page keeps the user's settings (a 2,000-epoch setting is not reset to the preset)."""
from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _cancel_buttons(at):
    return [b for b in at.button if b.key and b.key.startswith("cancel_")]


def test_cancel_keeps_the_changed_settings(ws_root, tiny):
    ws = Workspace.open("canceltest0001")
    ws.set_dataset(tiny, "tiny")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.switch_page("pages/2_cluster.py").run()
    at.selectbox(key="method_pick").set_value("contrastive_sc").run()
    epochs = next(w for w in at.number_input if w.key.endswith("_epochs"))
    epochs.set_value(2000).run()
    at.button(key="start").click().run()
    deadline = time.time() + 90
    while not _cancel_buttons(at) and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    _cancel_buttons(at)[0].click().run()
    while _cancel_buttons(at) and time.time() < deadline:
        time.sleep(0.5)
        at.run()
    assert not at.exception
    assert at.selectbox(key="method_pick").value == "contrastive_sc"
    assert next(w for w in at.number_input if w.key.endswith("_epochs")).value == 2000


def test_presets_are_offered_in_plain_words_and_never_the_smoke_test(ws_root, tiny):
    ws = Workspace.open("presettest0001")
    ws.set_dataset(tiny, "tiny")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.switch_page("pages/2_cluster.py").run()
    at.selectbox(key="method_pick").set_value("cicl").run()
    picker = at.selectbox(key="cfg_cicl_preset")
    assert picker.options == ["paper — the published settings", "cpu — adapted for machines without a GPU"]
    assert picker.value == "cpu"
    notes = " ".join(c.value for c in at.caption)
    assert "Adaptation, not the published setting" in notes and "[A]" not in notes
    assert any("Estimated:" in i.value and "peak memory not measured for this method yet" in i.value for i in at.info)
