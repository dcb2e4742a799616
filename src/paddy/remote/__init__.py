"""Training on Kaggle's GPUs (`paddy kaggle run|status|pull`): the bundle sent as a script kernel, the runner that
runs there, the pull that brings its output back as a DVC experiment, and the steps that chain them. Above
paddy.kaggle (the client calls) and paddy.training (the check a bundle passes before it is sent)."""
