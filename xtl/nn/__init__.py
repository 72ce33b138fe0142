"""Networks: the spec, the model and its Dataset, the backends, training and sweeps."""
