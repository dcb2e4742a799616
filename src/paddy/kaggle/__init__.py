"""The Kaggle API: the competition zip (downloaded once, verified, cached), submissions, kernels."""
