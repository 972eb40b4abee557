"""Command-line entry points: `python -m runners.compare`, `python -m runners.tune`."""
