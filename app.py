"""scclust app: router and frame (run with ``streamlit run app.py``). Pages live in ``pages/``."""
import logging

import streamlit as st

from scclust_core.ui import common, sidebar, state

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="scclust · single-cell clustering", page_icon="🧬", layout="wide")
state.init()
sidebar.card()

pages = {
    "Workflow": [
        st.Page("pages/1_data.py", title="Data", icon="📂", default=True),
        st.Page("pages/2_cluster.py", title="Cluster", icon="🧮"),
        st.Page("pages/3_explore.py", title="Explore", icon="🔭"),
        st.Page("pages/4_markers.py", title="Markers", icon="🧪"),
        st.Page("pages/5_compare.py", title="Compare", icon="⚖️"),
        st.Page("pages/6_export.py", title="Export", icon="💾"),
    ]
}
page = st.navigation(pages)
with common.guard(page.title):
    page.run()
