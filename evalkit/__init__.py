"""evalkit: evaluation and benchmarking for adversarial and autoencoder generative models."""

__version__ = "0.1.0"
