"""diffsteer: audit text-to-image diffusion models for bias and unsafe output, and steer them."""

__version__ = "0.1.0"
