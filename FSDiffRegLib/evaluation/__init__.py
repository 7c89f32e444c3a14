"""The ACDC evaluation, the baselines and the benchmark of registration and cardiac function."""
