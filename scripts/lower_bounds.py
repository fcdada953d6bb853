"""Print the lowest version pyproject.toml allows of each serving, [train], [boost], [mlflow], [explain] and
[report] dependency, pinned exactly (``name==X`` for each ``name>=X``), for scripts/check-lower-bounds.sh."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def lower_bounds(pyproject: Path, extras: tuple[str, ...] = ("train", "boost", "mlflow", "explain", "report")
                 ) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        found = re.match(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*>=\s*([0-9][0-9.]*)", requirement)
        if found:
            pins.append(f"{found[1]}=={found[2]}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print(" ".join(lower_bounds(root / "pyproject.toml")))
