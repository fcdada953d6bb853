"""A bundle sent to Ray workers as bytes, so that workers on other machines need not see its folder."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tabserve.core.bundle import read_bundle
from tabserve.core.manifest import MANIFEST_FILE


@dataclass(frozen=True, slots=True)
class ShippedBundle:
    """The manifest text and the model file, as read (and verified) where the job was started."""

    name: str
    manifest_text: bytes
    model_file: str
    onnx_bytes: bytes

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ShippedBundle:
        bundle = read_bundle(path)  # a broken bundle is refused here, before any worker starts
        return cls(name=f"{bundle.name}:{bundle.version}", manifest_text=(bundle.path / MANIFEST_FILE).read_bytes(),
                   model_file=bundle.manifest.model.file, onnx_bytes=bundle.onnx_bytes)

    def unpack(self) -> Path:
        """Write the bundle into a new temporary folder on this worker; loading it checks the hash again."""
        root = Path(tempfile.mkdtemp(prefix="tabserve-bundle-"))
        (root / MANIFEST_FILE).write_bytes(self.manifest_text)
        model_path = root / self.model_file
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(self.onnx_bytes)
        return root
