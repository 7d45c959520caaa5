import streamlit as st

from scclust_core.ui import common, markers_ui, state

common.page_setup()
st.title("Markers")
st.caption("Genes that distinguish each cluster from all other cells (Wilcoxon rank-sum test, Benjamini-Hochberg "
           "adjusted p-values, on log-normalised expression).")
if not common.need_data() or not common.need_run():
    st.stop()

rec = state.choose_run("Run")
with common.guard("Finding marker genes"):
    df = markers_ui.marker_table(rec.run_id)
    markers_ui.table_section(rec.run_id, df)
    st.subheader("Expression of chosen genes")
    markers_ui.plots_section(rec.run_id, df)
