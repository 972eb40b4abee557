"""The noprop-bench harness: data, schedules, training engines, measurement and tracking."""
import os

# No network calls at run time: MLflow's usage telemetry stays off unless a user turns it on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
