"""Scratch folders for vLLM's caches, temporary files and ZMQ sockets; removed on close.

vLLM writes compile caches (``VLLM_CACHE_ROOT``, ``TORCHINDUCTOR_CACHE_DIR``) and leaves ZMQ
IPC socket files in the temporary folder (``TMPDIR``, ``VLLM_RPC_BASE_PATH``) behind. Every
worker process of the backend runs with these variables pointed inside one :class:`Scratch`
folder, so closing the backend leaves nothing behind. The root path is kept short: Unix socket
paths are limited to 107 bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from greenllm.errors import ConfigError

__all__ = ["Scratch"]

logger = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 107 - 40  # leave room for vLLM's own socket names


class Scratch:
    """A private temporary folder with named sub-folders; :meth:`close` removes it (idempotent).

    Nothing is created until first use (:attr:`root`, :meth:`subdir` or :meth:`env`).
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None, prefix: str = "gllm-") -> None:
        self._parent = Path(parent) if parent is not None else None
        self._prefix = prefix
        self._root: Path | None = None

    @property
    def root(self) -> Path:
        """The folder, created on first access."""
        if self._root is None:
            parent = self._parent or Path(tempfile.gettempdir())
            parent.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix=self._prefix, dir=parent))
            if len(str(self._root)) > _SOCKET_PATH_MAX:
                logger.warning(
                    "scratch folder %s is long (%d chars): vLLM's Unix sockets may not fit",
                    self._root, len(str(self._root)),
                )  # fmt: skip
            logger.debug("scratch folder %s", self._root)
        return self._root

    @property
    def created(self) -> bool:
        return self._root is not None and self._root.exists()

    def subdir(self, name: str) -> Path:
        """``root/name``, created if absent; ``name`` is one path component."""
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"scratch sub-folder name {name!r}: must be one path component")
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        """Environment variables that keep vLLM's caches and sockets inside this folder."""
        tmp = str(self.subdir("tmp"))
        return {
            "VLLM_CACHE_ROOT": str(self.subdir("vllm-cache")),
            "TORCHINDUCTOR_CACHE_DIR": str(self.subdir("inductor")),
            "TRITON_CACHE_DIR": str(self.subdir("triton")),
            "TMPDIR": tmp,
            "VLLM_RPC_BASE_PATH": tmp,
        }

    def close(self) -> None:
        """Remove the folder and everything in it (idempotent)."""
        root, self._root = self._root, None
        if root is not None and root.exists():
            shutil.rmtree(root, ignore_errors=True)
            logger.debug("removed scratch folder %s", root)

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scratch({str(self._root) if self._root else 'not created'})"
