"""tabserve report: one self-contained HTML page with PNG charts, from the bundle (and optional rows)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from tabserve.cli import main

pytest.importorskip("matplotlib")


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_from_the_bundle_alone(demo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo.html"
    assert main(["report", str(demo_bundle), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    assert "<h1>Model report: demo 1</h1>" in page
    for section in ("Holdout metrics", "ONNX parity", "Feature importance", "Feature statistics"):
        assert f"<h2>{section}" in page
    assert "<td>r2</td>" in page and "passed" in page and "feature_3" in page
    images = _images(page)
    assert len(images) == 3  # importance, parity, statistics
    assert all(i.startswith(b"\x89PNG\r\n\x1a\n") and len(i) > 2000 for i in images)


def test_report_with_rows_adds_the_confusion_matrix_and_shap(iris_bundle: Path, bundles_dir: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "iris.html"
    assert main(["report", str(iris_bundle), "-o", str(out), "--data", str(bundles_dir / "iris.csv")]) == 0
    page = out.read_text()
    assert "<h2>On iris.csv</h2>" in page
    assert len(_images(page)) == 5  # + confusion matrix, mean |SHAP|


def test_report_with_rows_but_no_target_says_so(demo_bundle: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n")
    assert main(["report", str(demo_bundle), "-o", str(tmp_path / "x.html"), "--data", str(rows)]) == 2
    assert "has no target column" in capsys.readouterr().err


def test_report_help_names_the_extra(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "pip install 'tabserve[report]'" in capsys.readouterr().out
