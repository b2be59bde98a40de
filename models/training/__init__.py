"""CPU training on the synthetic task: the trained-synthetic reference weights (``reference``)."""
