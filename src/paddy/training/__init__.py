"""Training one model over its folds: the models, the data, the step, the loop, checkpoints and resume, DDP."""
