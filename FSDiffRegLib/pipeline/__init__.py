"""The algorithm on typed requests: register a pair, refine and unfold a field, track a cine, cardiac function."""
