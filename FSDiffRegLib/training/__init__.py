"""Training the network (single process or torchrun) on ACDC pairs."""
