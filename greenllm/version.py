"""greenllm's version, recorded in every stored profile and export."""

__all__ = ["__version__"]

__version__ = "0.1.0"
