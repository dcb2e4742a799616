"""paddy: a reproducible Kaggle computer-vision pipeline on DVC, PyTorch and timm."""

from paddy.errors import PaddyError

__all__ = ["PaddyError"]
__version__ = "0.1.0"
