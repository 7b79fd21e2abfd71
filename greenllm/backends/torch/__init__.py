"""The ``torch`` backend: the four configurations on greenllm's own PyTorch engine
(:mod:`greenllm.engine`). Importing this package does not import torch."""

from greenllm.backends.torch.backend import TorchBackend

__all__ = ["TorchBackend"]
