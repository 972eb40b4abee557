"""Networks compared by the suite: NoProp-DT (with and without decoder) and backprop baselines."""
