"""Every shell and Python block of README.md and docs/*.md runs as written, page by page, in order, as one
scenario (train → register → serve → predict → ...), or is marked in the Markdown with the reason it cannot
run here. The conventions (skips, servers, ports, expected output) are in tests/docs/runner.py."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.docs.runner import ROOT, Scenario, blocks_of

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = {page: blocks_of(page) for page in PAGES}
_TALKS_TO_DEMO = re.compile(r"(?:localhost|127\.0\.0\.1):(?:8000|8765|8001)\b")


def _write_diabetes(work: Path) -> None:
    """The README's import example: a LightGBM text model and its data as CSV."""
    import lightgbm
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(work / "diabetes.csv", index=False)
    data = lightgbm.Dataset(frame.drop(columns="target"), frame["target"])
    params = {"objective": "regression", "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, data, num_boost_round=20)
    booster.save_model(str(work / "diabetes.txt"))


def _write_houses(work: Path) -> None:
    """docs/lifecycle.md's data: scikit-learn's diabetes data with its target named ``price``, a first model
    on 60 noisy rows, a retrain on 342 clean rows, scored on 100 rows that neither saw; ``june.parquet`` is
    the evaluation rows without the target."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.rename(columns={"target": "price"})
    first = frame.iloc[:60].copy()
    first["price"] += np.random.default_rng(0).normal(0, 60, len(first))
    first.to_csv(work / "houses.csv", index=False)
    frame.iloc[:342].to_csv(work / "houses-2024-06.csv", index=False)
    frame.iloc[342:].to_csv(work / "houses-eval.csv", index=False)
    frame.iloc[342:].drop(columns="price").to_parquet(work / "june.parquet", index=False)


def _write_credit(work: Path) -> None:
    """docs/lifecycle.md's A/B example: two quarters of a binary ``default`` target."""
    import pandas as pd
    from sklearn.datasets import make_classification

    for name, seed in (("credit.csv", 0), ("credit-q2.csv", 1)):
        x, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=seed)
        frame = pd.DataFrame(x, columns=["income", "debt", "age", "tenure", "utilization", "late_payments"])
        frame["default"] = y
        frame.to_csv(work / name, index=False)


def _write_churn(work: Path) -> None:
    """docs/loop.md's customers: churn is likelier with a short tenure, a high fee and many support calls."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"tenure_months": rng.integers(1, 72, n).astype(float),
                          "monthly_fee": rng.uniform(20, 120, n).round(2),
                          "support_calls": rng.poisson(2, n).astype(float)})
    risk = -frame.tenure_months / 24 + frame.monthly_fee / 60 + frame.support_calls / 2 + rng.normal(0, 1, n)
    frame["status"] = np.where(risk > 1.5, "churned", "stayed")
    frame.to_parquet(work / "churn-original.parquet", index=False)


def _write_customers(work: Path, demo_bundle: Path) -> None:
    """docs/ray.md's batch scoring: ``./bundle`` is the demo model, the files hold its features plus an ``id``
    and a ``region`` to keep."""
    import numpy as np
    import pandas as pd

    shutil.copytree(demo_bundle, work / "bundle")
    rng = np.random.default_rng(0)
    for name, rows in (("customers.csv", 200), ("big.parquet", 5000)):
        frame = pd.DataFrame(rng.normal(size=(rows, 5)), columns=[f"feature_{i}" for i in range(5)])
        frame.insert(0, "id", np.arange(rows))
        frame["region"] = rng.choice(["north", "south"], rows)
        if name.endswith(".csv"):
            frame.to_csv(work / name, index=False)
        else:
            frame.to_parquet(work / name, index=False)


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory: pytest.TempPathFactory, bundles_dir: Path, iris_bundle: Path,
                demo_bundle: Path) -> Path:
    data = tmp_path_factory.mktemp("doc-data")
    shutil.copy(bundles_dir / "iris.csv", data / "iris.csv")  # written by conftest's iris_bundle
    _write_diabetes(data)
    _write_houses(data)
    _write_credit(data)
    _write_churn(data)
    _write_customers(data, demo_bundle)
    (data / "data" / "houses").mkdir(parents=True)  # docs/lifecycle.md's volume: /data/houses/latest.csv
    shutil.copy(data / "houses-2024-06.csv", data / "data" / "houses" / "latest.csv")
    return data


def test_every_page_is_collected_and_markers_give_reasons() -> None:
    assert {p.name for p in PAGES} >= {"README.md", "reference.md", "guide-fr.md", "integration.md"}
    for block in (b for blocks in BLOCKS.values() for b in blocks):
        assert block.skip is None or block.skip.strip(), f"{block.id}: a no-test mark needs a reason"
    assert any(b.skip is None for blocks in BLOCKS.values() for b in blocks), "no block runs at all"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_runs_as_written(page: Path, tmp_path: Path, sample_data: Path, demo_bundle: Path) -> None:
    runnable = [b for b in BLOCKS[page] if b.skip is None]
    if not runnable:
        pytest.skip(f"every block of {page.name} is marked no-test")
    home, work = tmp_path / "home", tmp_path / "work"
    shutil.copytree(demo_bundle, home / ".tabserve" / "models" / "demo" / "1")
    shutil.copytree(sample_data, work)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TABSERVE_", "MLFLOW_")) and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    scenario = Scenario(work, env)
    try:
        if any(_TALKS_TO_DEMO.search(b.code) for b in runnable):
            grpc = scenario.ports[8001]
            scenario.start_server(None, f"tabserve serve ~/.tabserve/models/demo --grpc-port {grpc}"
                                        " --no-access-log --no-pretrain")
        for block in runnable:
            scenario.run(block)
    finally:
        scenario.stop()
    skipped = len(BLOCKS[page]) - len(runnable)
    print(f"{page.relative_to(ROOT)}: {scenario.ran} blocks ran, {skipped} marked no-test")


def test_readme_links_every_docs_page_and_stays_short() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md links to no: {unlinked}"
    assert len(readme.split()) <= 1500, "README.md is over 1,500 words: move details to docs/reference.md"
