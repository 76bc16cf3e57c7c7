"""pgnumpy: policy gradients from scratch in NumPy, every gradient derived by hand."""

__version__ = "0.1.0"
