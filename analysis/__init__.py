"""Turning MLflow runs into comparison tables, plots and a results report."""
