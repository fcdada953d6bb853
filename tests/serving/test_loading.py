"""What a server accepts as a model version (#17): a manifest from a newer tabserve is refused naming both
format versions, a misspelt field is refused instead of read as its default, and what this version's own
exporter writes (every field, ``adversarial_rows`` and ``probes`` included) loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tabserve.core.bundle import read_bundle
from tabserve.core.manifest import FORMAT_VERSION, MANIFEST_FILE
from tabserve.core.runtime import RuntimeOptions
from tabserve.errors import BundleError
from tabserve.serving.loading import load_and_warm


def _edited(demo_bundle: Path, tmp_path: Path, **changes: object) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(demo_bundle, dest)
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest))
    return dest


def test_a_bundle_from_a_newer_tabserve_is_refused_naming_both_format_versions(demo_bundle: Path,
                                                                               tmp_path: Path) -> None:
    newer = _edited(demo_bundle, tmp_path, format_version=FORMAT_VERSION + 1, surely_new_field={"x": 1})
    with pytest.raises(BundleError) as refused:
        load_and_warm(newer, RuntimeOptions())
    message = refused.value.message
    assert f"format_version {FORMAT_VERSION + 1}" in message and f"format_version {FORMAT_VERSION} and older" \
        in message and "upgrade tabserve" in message


def test_a_misspelt_manifest_field_is_refused_not_read_as_its_default(demo_bundle: Path, tmp_path: Path) -> None:
    typo = _edited(demo_bundle, tmp_path, clases=["a", "b"])
    with pytest.raises(BundleError, match="clases"):
        read_bundle(typo)


def test_the_exporter_s_own_manifest_fields_are_declared_and_load(demo_bundle: Path) -> None:
    raw = json.loads((demo_bundle / MANIFEST_FILE).read_text())
    model = load_and_warm(demo_bundle, RuntimeOptions())
    parity = model.manifest.parity
    assert parity is not None and parity.adversarial_rows == raw["parity"]["adversarial_rows"] > 0
    assert parity.probes == raw["parity"].get("probes", {})
    assert model.load_seconds > 0


def test_an_older_manifest_without_format_version_or_adversarial_rows_loads(demo_bundle: Path,
                                                                          tmp_path: Path) -> None:
    raw = json.loads((demo_bundle / MANIFEST_FILE).read_text())
    parity = {k: v for k, v in raw["parity"].items() if k not in ("adversarial_rows", "probes")}
    older = _edited(demo_bundle, tmp_path, parity=parity)
    manifest = json.loads((older / MANIFEST_FILE).read_text())
    manifest.pop("format_version", None)
    (older / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert read_bundle(older).manifest.parity.adversarial_rows == 0  # type: ignore[union-attr]
