"""mmserve: train and serve fused image+text classifiers."""

__version__ = "0.1.0"
