"""The network and what it is made of: configuration, diffusion, warping, losses, weights, the heart head."""
