"""tabserve report: one self-contained HTML page with PNG charts, from the bundle (and optional rows)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
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
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "iris.html"
    held_out = tmp_path / "later.csv"  # not the training file: rows of another day
    lines = (bundles_dir / "iris.csv").read_text().splitlines()
    held_out.write_text("\n".join(lines[:1] + lines[1::3]) + "\n")
    assert main(["report", str(iris_bundle), "-o", str(out), "--data", str(held_out)]) == 0
    page = out.read_text()
    assert "<h2>On later.csv</h2>" in page
    assert len(_images(page)) == 5  # + confusion matrix, mean |SHAP|
    assert "trained on" not in capsys.readouterr().err + page


def test_report_on_the_training_file_warns_that_the_charts_are_optimistic(
        iris_bundle: Path, bundles_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "iris.html"
    assert main(["report", str(iris_bundle), "-o", str(out), "--data", str(bundles_dir / "iris.csv")]) == 0
    err = capsys.readouterr().err
    assert "warning: iris.csv is the file this model was trained on" in err and "optimistic" in err
    assert "<p class='bad'>iris.csv is the file this model was trained on" in out.read_text()


def _contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    from tabserve.cli.report_page import _luminance

    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_number_of_the_confusion_matrix_is_readable_on_its_cell(iris_bundle: Path) -> None:
    from matplotlib.colors import to_rgba

    import tabserve
    from tabserve.cli.report_page import Evaluation, evaluation_figure

    manifest = tabserve.read_bundle(iris_bundle).manifest
    actual = np.array(["setosa"] * 50 + ["versicolor"] * 30 + ["virginica"] * 20)
    predicted = actual.copy()
    predicted[60:70] = "virginica"  # a mid-dark cell and a light one beside the dark diagonal
    fig = evaluation_figure(manifest, Evaluation("rows.csv", actual, predicted, None))
    ax = fig.axes[0]
    (image,) = ax.images
    cells = image.get_array()
    for text in ax.texts:
        col, row = (round(v) for v in text.get_position())
        background = image.cmap(image.norm(cells[row, col]))
        assert _contrast(to_rgba(text.get_color()), background) >= 4.5, (text.get_text(), background)


def test_feature_names_of_side_by_side_importance_panels_do_not_run_into_each_other(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    import tabserve
    from tabserve.cli.report_page import importance_figure
    from tabserve.training import train_file

    frame = load_breast_cancer(as_frame=True).frame.iloc[:, list(range(12)) + [30]]
    frame.columns = [f"{c} measured on the cell nuclei" if c != "target" else c for c in frame.columns]
    pd.DataFrame(frame).to_csv(tmp_path / "long.csv", index=False)
    bundle = train_file(tmp_path / "long.csv", "target", dest=tmp_path / "long").path
    fig = importance_figure(tabserve.read_bundle(bundle).manifest)
    assert fig is not None and len(fig.axes) == 2
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes
    for label in right.get_yticklabels():
        assert not label.get_window_extent(renderer).overlaps(left.get_window_extent(renderer)), label.get_text()


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
