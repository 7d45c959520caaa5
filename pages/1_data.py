import streamlit as st

from scclust_core.ui import common, data_ui, samples_ui, state
from scclust_core.ui.common import guard, show_table

common.page_setup()
st.title("Data")
st.caption("Upload a single-cell count matrix or open the built-in PBMC demo. "
           "Everything is saved in your workspace, so a refresh or a restart loses nothing.")

data_ui.load_section()

if state.adata() is None:
    st.info("No data loaded yet.")
    st.stop()

with guard("Summarising the data"):
    data_ui.summary_section()

with guard("Samples"):
    data_ui.samples_section()

with guard("Quality control"):
    data_ui.qc_section()

with guard("Doublets"):
    samples_ui.doublet_section()

with st.expander("Preview of the cell annotations (obs)"):
    show_table(state.adata().obs.head(50))

st.page_link("pages/2_cluster.py", label="Next: cluster the cells", icon=":material/arrow_forward:")
