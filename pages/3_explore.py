import streamlit as st

from scclust_core import plots
from scclust_core.embed import KINDS
from scclust_core.ui import common, explore_ui, state

common.page_setup()
st.title("Explore")
if not common.need_data() or not common.need_run():
    st.stop()

rec = state.choose_run("Run to explore")
run_id = rec.run_id
kind = st.radio("2-D view of the run's learned embedding", KINDS, horizontal=True, key="view_kind",
                help="UMAP/t-SNE/PCA are computed on the embedding the method learned, not on the genes.")

with common.guard(f"Computing the {kind}"):
    xy = explore_ui.view_coords(run_id, kind)
    color, name, continuous = explore_ui.colour_values(run_id)
    left, right = st.columns([3, 1])
    with left:
        selected = explore_ui.scatter_with_selection(run_id, xy, color, name, continuous, kind)
    with right:
        st.plotly_chart(plots.cluster_sizes(state.labels(run_id)), key="sizes")
    explore_ui.selection_panel(run_id, selected)

with st.expander("Rename or merge clusters", expanded=False):
    with common.guard("Renaming clusters"):
        explore_ui.rename_merge(run_id)
