"""docs/protocol-v2.md's gRPC examples run against a real server and print what the page shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol-v2.md"
EXAMPLE = re.compile(r"^```python\n(.*?)^```\n\n```text\n(.*?)^```", re.DOTALL | re.MULTILINE)


def grpc_examples() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("\n## gRPC\n"):]
    section = section[:section.index("\n## ", 1)]
    return EXAMPLE.findall(section)


def test_the_page_has_its_grpc_examples():
    examples = grpc_examples()
    assert len(examples) == 2
    assert "tritonclient.grpc" in examples[0][0] and "InferenceGRPCClient" in examples[1][0]


@pytest.mark.parametrize("index", [0, 1], ids=["tritonclient", "kserve"])
def test_grpc_example_prints_what_the_page_shows(server, index):
    code, shown = grpc_examples()[index]
    # each in its own process: tritonclient.grpc and kserve cannot share one (tests/grpc/clients.py)
    done = subprocess.run([sys.executable, "-c", code.replace("localhost:8001", server[1])], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown
