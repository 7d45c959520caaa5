"""Streamlit UI helpers: the ONLY part of scclust_core that imports streamlit."""
