"""The docs run: docs/integration.md's python blocks are executed, and README/guide-fr/reference cannot drift."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

import tabserve

ROOT = Path(__file__).resolve().parents[2]
INTEGRATION = ROOT / "docs" / "integration.md"
README = ROOT / "README.md"
GUIDE_FR = ROOT / "docs" / "guide-fr.md"
REFERENCE = ROOT / "docs" / "reference.md"

CURL_BODY = '{"data": [0.1, 0.2, 0.3, 0.4, 0.5]}'
CURL = ("curl -X POST localhost:8000/api/v1/predict -H 'Content-Type: application/json' "
        f"-d '{CURL_BODY}'")
COMMANDS = ("bash scripts/serve-demo.sh", "bash scripts/test.sh", "bash .ci/run")

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
# `print(expr)   # expected output`, the comment possibly continued on the next lines at the same column
_PRINT = re.compile(r"^(?P<indent>\s*)print\((?P<args>.*)\)(?P<gap>\s+)# (?P<expected>.*)$")


def code_blocks(path: Path, lang: str) -> list[str]:
    return [body for kind, body in _FENCE.findall(path.read_text(encoding="utf-8")) if kind == lang]


def with_checked_prints(code: str) -> str:
    """Turn each commented ``print`` into a check that the printed text matches the comment
    (``...`` in the comment stands for anything)."""
    lines = code.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _PRINT.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        column = lines[i].index("# ", m.start("gap"))
        expected = [m["expected"]]
        def continues(line: str, column: int = column) -> bool:
            return line[:column].strip() == "" and line[column:].startswith("# ")

        while i + 1 < len(lines) and continues(lines[i + 1]):
            i += 1
            expected.append(lines[i][column + 2:])
        out.append(f"{m['indent']}__check_print__({m['args']}, expected={' '.join(expected)!r})")
        i += 1
    return "\n".join(out)


def check_print(*args: Any, expected: str) -> None:
    text = " ".join(str(a) for a in args)
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    assert re.fullmatch(pattern, text, re.DOTALL), f"printed:\n  {text}\nbut the doc says:\n  {expected}"
    print(text)


def substitute(code: str, name: str, path: Path) -> str:
    new, count = re.subn(rf'^{name} = "[^"\n]*"', f"{name} = {str(path)!r}", code, flags=re.MULTILINE)
    assert count == 1, f"docs/integration.md must set {name} = \"...\" once in its first python block"
    return new


@pytest.fixture(autouse=True)
def _no_tabserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The doc's Settings() must not pick up the environment of whoever runs the tests.
    for key in list(os.environ):
        if key.startswith("TABSERVE_"):
            monkeypatch.delenv(key)


@pytest.mark.slow
def test_integration_doc_examples_run(demo_bundle: Path, iris_bundle: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    blocks = code_blocks(INTEGRATION, "python")
    assert len(blocks) >= 6, "docs/integration.md lost its examples"
    blocks[0] = substitute(substitute(blocks[0], "BUNDLE", demo_bundle), "CLASSIFIER", iris_bundle)
    namespace: dict[str, Any] = {"__name__": "tabserve_docs", "__check_print__": check_print}
    for number, block in enumerate(blocks, 1):
        source = with_checked_prints(block)
        try:
            exec(compile(source, f"docs/integration.md python block {number}", "exec"), namespace)  # noqa: S102 - the doc's own examples
        except BaseException as exc:
            raise AssertionError(f"docs/integration.md python block {number} failed: {exc!r}\n\n{block}") \
                from exc
    assert capsys.readouterr().out, "the examples print what their comments show"


@pytest.mark.parametrize("doc", [README], ids=lambda p: p.name)
def test_readme_python_snippet_runs(doc: Path, demo_bundle: Path) -> None:
    (block,) = code_blocks(doc, "python")
    assert "~/.tabserve/models/demo" in block
    source = block.replace('"~/.tabserve/models/demo"', repr(str(demo_bundle)))
    namespace: dict[str, Any] = {"__name__": "tabserve_docs"}
    exec(compile(source, f"{doc.name} python block", "exec"), namespace)  # noqa: S102 - the doc's own example
    from fastapi.testclient import TestClient

    r = TestClient(namespace["app"]).post("/ml/api/v1/predict", json={"data": [0.1, 0.2, 0.3, 0.4, 0.5]})
    assert r.status_code == 200 and r.json()["features_count"] == 5
    y = namespace["model"].predict([[0.1, 0.2, 0.3, 0.4, 0.5]])
    assert r.json()["prediction"] == pytest.approx(float(y[0]), rel=1e-6)
    assert repr(y) in block, "the snippet's comment must show what predict returns"


def test_print_checks_understand_continued_comments() -> None:
    code = with_checked_prints('x = 1\nprint("a b c")   # a ...\n                 # c\n')
    assert '__check_print__("a b c", expected=\'a ... c\')' in code
    check_print("a b c", expected="a ... c")
    with pytest.raises(AssertionError):
        check_print("a b", expected="a c")


def test_readme_shows_the_two_commands_and_the_curl_example() -> None:
    readme = README.read_text(encoding="utf-8")
    for command in COMMANDS:
        assert re.search(rf"^{re.escape(command)}$", readme, re.MULTILINE), f"README lacks the line: {command}"
    assert CURL in readme
    guide = GUIDE_FR.read_text(encoding="utf-8")
    for command in COMMANDS:
        assert re.search(rf"^{re.escape(command)}$", guide, re.MULTILINE), f"guide-fr.md lacks the line: {command}"
    assert CURL in guide


@pytest.mark.parametrize("doc", [README, GUIDE_FR], ids=lambda p: p.name)
def test_the_documented_curl_response_is_what_the_demo_model_answers(doc: Path, demo_bundle: Path) -> None:
    from fastapi.testclient import TestClient

    text = doc.read_text(encoding="utf-8")
    after_curl = text[text.index(CURL):]
    shown = json.loads(re.search(r"^\{\"prediction\".*\}$", after_curl, re.MULTILINE).group(0))
    app = tabserve.create_app(tabserve.Settings(access_log=False), model=tabserve.load(demo_bundle))
    actual = TestClient(app).post("/api/v1/predict", content=CURL_BODY,
                                  headers={"Content-Type": "application/json"}).json()
    assert set(shown) == set(actual)
    assert shown["prediction"] == pytest.approx(actual["prediction"], rel=1e-6)
    assert {k: shown[k] for k in ("model_format", "features_count", "model_name", "model_version")} == {
        k: actual[k] for k in ("model_format", "features_count", "model_name", "model_version")}


def test_the_two_commands_exist() -> None:
    script = ROOT / "scripts" / "serve-demo.sh"
    assert script.is_file() and os.access(script, os.X_OK), "scripts/serve-demo.sh must be executable"
    text = script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "tabserve serve" in text
    ci = ROOT / ".ci" / "run"
    assert ci.is_file()


@pytest.mark.parametrize("doc", [README, GUIDE_FR, INTEGRATION, REFERENCE], ids=lambda p: p.name)
def test_every_tabserve_variable_in_the_docs_is_a_setting(doc: Path) -> None:
    named = set(re.findall(r"\bTABSERVE_[A-Z0-9_]+\b", doc.read_text(encoding="utf-8")))
    known = {f"TABSERVE_{field.upper()}" for field in tabserve.Settings.model_fields}
    assert named, f"{doc.name} names no TABSERVE_* variable"
    assert named <= known, f"{doc.name} names unknown setting(s): {sorted(named - known)}"


@pytest.mark.parametrize("doc", [REFERENCE], ids=lambda p: p.name)
def test_configuration_table_lists_every_setting_with_its_default(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for name, field in tabserve.Settings.model_fields.items():
        row = next((line for line in text.splitlines()
                    if line.startswith("|") and f"`TABSERVE_{name.upper()}`" in line), None)
        assert row is not None, f"{doc.name}: no configuration table row for TABSERVE_{name.upper()}"
        assert f"`{name}`" in row, f"{doc.name}: the row for TABSERVE_{name.upper()} lacks the field name"
        default = field.default
        if field.default_factory is None and default is not None:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert f"`{shown}`" in row, f"{doc.name}: TABSERVE_{name.upper()} default should read `{shown}`"


@pytest.mark.parametrize("doc", [README, GUIDE_FR, INTEGRATION, REFERENCE], ids=lambda p: p.name)
def test_docs_link_to_no_external_site(doc: Path) -> None:
    urls = re.findall(r"https?://[^\s)`'\"<>]+", doc.read_text(encoding="utf-8"))
    outside = [u for u in urls if not re.match(r"https?://(127\.0\.0\.1|localhost|0\.0\.0\.0)([:/]|$)", u)]
    assert not outside, f"{doc.name} links outside this machine: {outside}"
