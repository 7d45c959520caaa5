import streamlit as st

from scclust_core.ui import common, compare_ui, state

common.page_setup()
st.title("Compare")
if not common.need_data() or not common.need_run():
    st.stop()

st.subheader("Leaderboard of all runs on this dataset")
with common.guard("Building the leaderboard"):
    compare_ui.leaderboard()

st.subheader("Where do the cells of a run go?")
rec = state.choose_run("Run")
with common.guard("Comparing"):
    compare_ui.flows(rec)

with common.guard("Showing the samples"):
    compare_ui.samples_section(rec)
