import streamlit as st

from scclust_core.ui import common, export_ui

common.page_setup()
st.title("Export")
if not common.need_data() or not common.need_run():
    st.stop()

with common.guard("Preparing the downloads"):
    export_ui.data_section()

st.subheader("Figures")
st.caption("PNG or SVG for papers, or interactive HTML.")
with common.guard("Preparing the figure"):
    export_ui.figures_section()
