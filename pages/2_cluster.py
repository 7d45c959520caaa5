import streamlit as st

from scclust_core.ui import cluster_ui, common, live, state

st.title("🧮 Cluster")
if not common.need_data():
    st.stop()

with st.container(border=True):
    with common.guard("Setting up the run"):
        cluster_ui.settings_and_start()

job = state.active_job()
if job is None:
    # a job that just ended in this session (or a refresh during training) is shown from memory or disk
    last = st.session_state.get("last_started_run")
    job = state.jobs().get(last) if last else None

if job is not None and job.running:
    live.live_panel(job)
else:
    recs = state.runs()
    if recs:
        st.subheader("Latest run")
        with common.guard("Showing the run"):
            live.run_summary(recs[0])

recs = state.runs()
if recs:
    st.subheader(f"All runs on this dataset ({len(recs)})")
    st.dataframe(live.runs_table(recs), hide_index=True,
                 column_config={"ARI": st.column_config.NumberColumn(format="%.3f"),
                                "NMI": st.column_config.NumberColumn(format="%.3f"),
                                "CA": st.column_config.NumberColumn(format="%.3f"),
                                "silhouette": st.column_config.NumberColumn(format="%.3f")})
    st.page_link("pages/3_explore.py", label="Explore the clusters", icon="🔭")
