"""A bundle sent to Ray workers as bytes, so that workers on other machines need not see its folder."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tabserve.core.bundle import read_bundle


@dataclass(frozen=True, slots=True)
class ShippedBundle:
    """Every file of a bundle folder (model.onnx, tabserve.json and whatever the manifest refers to), as read
    where the job was started; loading the unpacked copy checks it again (hash, manifest, ONNX inputs)."""

    name: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ShippedBundle:
        bundle = read_bundle(path)  # a broken bundle is refused here, before any worker starts
        files = {p.relative_to(bundle.path).as_posix(): p.read_bytes() for p in sorted(bundle.path.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(bundle.path).parts)}
        return cls(name=f"{bundle.name}:{bundle.version}", files=files)

    def unpack(self) -> Path:
        """Write the bundle into a new temporary folder on this worker."""
        root = Path(tempfile.mkdtemp(prefix="tabserve-bundle-"))
        for name, data in self.files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root
