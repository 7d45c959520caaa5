"""scclust app: router and frame (run with ``streamlit run app.py``). Pages live in ``pages/``."""
import logging
import sys

import streamlit as st

st.set_page_config(page_title="scclust · single-cell clustering", page_icon=":material/biotech:", layout="wide")
# The first run of a fresh server imports torch and scanpy (seconds): say so instead of showing an empty page
_loading = st.empty()
_loading.caption(":material/hourglass_top: Loading scclust…")

from scclust_core.ui import common, sidebar, state  # noqa: E402 - after the placeholder on purpose

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

ws = state.init()
_loading.empty()
if "--demo" in sys.argv[1:] and not ws.has_dataset():
    # `streamlit run app.py -- --demo`: every new workspace opens on the built-in PBMC demo
    with st.spinner("Opening the built-in PBMC demo…"):
        from scclust_core import datasets

        state.set_adata(datasets.demo(), "PBMC demo (700 cells)")
        ws.set_reference("bulk_labels")

pages = {
    "Workflow": [
        st.Page("pages/1_data.py", title="Data", icon=":material/upload_file:", default=True),
        st.Page("pages/2_cluster.py", title="Cluster", icon=":material/hub:"),
        st.Page("pages/3_explore.py", title="Explore", icon=":material/scatter_plot:"),
        st.Page("pages/4_markers.py", title="Markers", icon=":material/genetics:"),
        st.Page("pages/5_compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/6_export.py", title="Export", icon=":material/download:"),
    ]
}
page = st.navigation(pages)
st.session_state[common.ROUTER_FLAG] = True  # pages check it (see common.page_setup)
st.session_state[common.ROUTER_FIX_TRIED] = False
try:
    with common.guard(page.title):
        page.run()
finally:
    st.session_state[common.ROUTER_FLAG] = False
    sidebar.card()  # drawn after the page so it shows what the page just did (also when the page stops early)
