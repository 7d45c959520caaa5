import streamlit as st

from scclust_core.ui.common import show_table
from scclust_core.ui import cluster_ui, common, run_record, live_panel, state

common.page_setup()
st.title("Cluster")
if not common.need_data():
    st.stop()

job = state.active_job()
if job is None:  # a job of this session that just ended is still shown from memory
    last = st.session_state.get("last_started_run")
    job = state.jobs().get(last) if last else None

training = job is not None and job.running
if training:
    live_panel.live_panel(job)  # training keeps going when you switch pages; its view is here when you come back
    # While a run trains, the form and the runs table are drawn only on demand: drawing them after the click on
    # Start cost the browser about a CPU-second, which a short training on a small machine paid for.
    if st.toggle("Prepare the settings of the next run", key="next_run_settings"):
        with common.guard("Setting up the run"):
            cluster_ui.settings_and_start()
else:
    recs = state.runs()
    just_ran = job is not None and recs and recs[0].run_id == job.run_id
    if just_ran:  # results first, the settings for another run folded below them
        st.subheader("Latest run")
        with common.guard("Showing the run"):
            run_record.run_details(recs)
    with st.expander("Settings for a new run", expanded=not just_ran):
        with common.guard("Setting up the run"):
            cluster_ui.settings_and_start()
    if recs and not just_ran:
        st.subheader("Latest run")
        with common.guard("Showing the run"):
            run_record.run_details(recs)

recs = state.runs()
if recs and (not training or st.toggle(f"Show all runs on this dataset ({len(recs)})", key="runs_while_training")):
    st.subheader(f"All runs on this dataset ({len(recs)})")
    show_table(run_record.runs_table(recs), hide_index=True)
    st.caption("Scores are display only (against the reference annotation chosen at the start; silhouette on the "
               "run's own embedding); a dash means not known yet. Start times are UTC.")
    st.page_link("pages/3_explore.py", label="Explore the clusters", icon=":material/scatter_plot:")
