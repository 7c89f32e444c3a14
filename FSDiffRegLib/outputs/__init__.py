"""The out-dir contract (one run's whole set or nothing) and the figures a run draws."""
