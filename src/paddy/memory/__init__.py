"""GPU memory per batch size, measured on CUDA or estimated without, and the batches that fit the budget."""
