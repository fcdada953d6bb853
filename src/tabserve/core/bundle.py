"""A model version on disk: ``model.onnx`` + ``tabserve.json``, written atomically, verified on read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tabserve import __version__
from tabserve.core.external_data import external_tensors
from tabserve.core.manifest import (
    EXPLAIN_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    TENSOR_MODEL_FILE,
    Manifest,
    ModelFile,
)
from tabserve.errors import BundleError


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    manifest: Manifest
    onnx_bytes: bytes
    explain_bytes: bytes | None = None  # explain.npz, verified against the manifest; None when there is none
    tensor_bytes: bytes | None = None  # model.tensor.onnx (the trees as standard operators), verified; or None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_bundle_dir(path: str | os.PathLike[str]) -> Path:
    """A bundle folder, or a model folder whose newest version folder is taken."""
    p = Path(path).expanduser()
    if (p / MANIFEST_FILE).is_file():
        return p
    if p.is_file() and p.name in (MANIFEST_FILE, MODEL_FILE):
        return p.parent
    if not p.exists():
        raise BundleError(f"no bundle at {p}: the path does not exist", path=str(p))
    # Hidden folders are a writer's staging or retired copies, never a version to serve.
    versions = [d for d in p.iterdir()
                if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_FILE).is_file()]
    if not versions:
        raise BundleError(
            f"no bundle at {p}: expected {MANIFEST_FILE} and {MODEL_FILE} there, "
            "or version folders that hold them (train one with `tabserve train`)",
            path=str(p),
        )
    return max(versions, key=lambda d: _version_key(d.name))


def _version_key(name: str) -> tuple[int, int | str]:
    return (1, int(name)) if name.isdigit() else (0, name)


def next_version(model_dir: Path) -> str:
    """The next integer version in a model folder (``1`` for a new one)."""
    numbers = [int(d.name) for d in model_dir.iterdir() if d.name.isdigit()] if model_dir.is_dir() else []
    return str(max(numbers, default=0) + 1)


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle and check what can be checked without onnxruntime: manifest schema and hash."""
    root = resolve_bundle_dir(path)
    manifest_path = root / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} cannot be read as JSON: {exc}", path=str(manifest_path)) from exc
    _check_format_version(raw, manifest_path)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise BundleError(
            f"{manifest_path} is not a valid tabserve manifest: {where}: {first['msg']} "
            f"({exc.error_count()} problem(s))",
            path=str(manifest_path),
        ) from exc
    model_path = _inside(root, manifest.model.file)
    try:
        onnx_bytes = model_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{model_path} cannot be read: {exc.strerror}", path=str(model_path)) from exc
    digest = sha256(onnx_bytes)
    if digest != manifest.model.sha256:
        raise BundleError(
            f"{model_path} has sha256 {digest} but {MANIFEST_FILE} records {manifest.model.sha256}: "
            "the model file was changed after export; restore it or export the bundle again",
            path=str(model_path),
        )
    _check_self_contained(onnx_bytes, root, model_path)
    _check_manifest(manifest, manifest_path)
    return Bundle(path=root, manifest=manifest, onnx_bytes=onnx_bytes,
                  explain_bytes=_read_recorded(root, manifest.explain, "the explanation data"),
                  tensor_bytes=_read_recorded(root, manifest.tensor_model, "the tensor graph", graph=True))


def _check_format_version(raw: object, where: Path) -> None:
    """A manifest written by a newer tabserve is refused before its fields are read: this version would not
    know what its new fields mean, and an unknown field is refused anyway, with a less useful message."""
    found = raw.get("format_version", FORMAT_VERSION) if isinstance(raw, dict) else FORMAT_VERSION
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        raise BundleError(
            f"{where} has format_version {found}; this tabserve ({__version__}) reads format_version "
            f"{FORMAT_VERSION} and older: upgrade tabserve to serve this bundle, or export it with this version",
            path=str(where))


def _read_recorded(root: Path, info: Any, what: str, graph: bool = False) -> bytes | None:
    """A file the manifest records beside model.onnx (``info``: its file and sha256), hash-checked, and checked
    self-contained like model.onnx when it is a ``graph``; None when the manifest records none. ``what`` names it
    in the messages."""
    if info is None:
        return None
    path = _inside(root, info.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path} cannot be read: {exc.strerror}; {MANIFEST_FILE} records it ({what})",
                          path=str(path)) from exc
    digest = sha256(data)
    if digest != info.sha256:
        raise BundleError(f"{path} has sha256 {digest} but {MANIFEST_FILE} records {info.sha256}: {what} was "
                          "changed after export; restore it or export the bundle again", path=str(path))
    if graph:
        _check_self_contained(data, root, path)
    return data


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if target.parent != root.resolve():
        raise BundleError(f"model file {name!r} in {root / MANIFEST_FILE} points outside the bundle")
    return target


def _check_self_contained(onnx_bytes: bytes, root: Path, model_path: Path) -> None:
    """No tensor may live in another file: the manifest's sha256 covers model.onnx alone, and an external
    location can point anywhere (``../``, an absolute path, a symlink)."""
    external = external_tensors(onnx_bytes)
    if not external:
        return
    name, location = external[0]
    more = f" (and {len(external) - 1} more tensor(s))" if len(external) > 1 else ""
    target = Path(location)
    escapes = (not location or target.is_absolute() or ".." in target.parts
               or not (root / target).resolve().is_relative_to(root.resolve()))
    if escapes:
        raise BundleError(f"{model_path} keeps tensor {name!r}{more} in external data at {location!r}, outside "
                          "the bundle: refused, a model must not make the server read other files",
                          path=str(model_path))
    raise BundleError(f"{model_path} keeps tensor {name!r}{more} in the external file {location!r}: a bundle "
                      f"holds the whole model in {MODEL_FILE} (its sha256 is checked, other files are not); "
                      "save it with onnx.save_model(model, path) without save_as_external_data",
                      path=str(model_path))


def _check_manifest(manifest: Manifest, where: Path) -> None:
    names = manifest.feature_names
    if not names:
        raise BundleError(f"{where} lists no features")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BundleError(f"{where} lists feature(s) {', '.join(map(repr, dupes))} more than once")
    for kind, spec, field in (("numeric", manifest.input, "input"),
                              ("categorical", manifest.categorical_input, "categorical_input")):
        if bool(manifest.features_of(kind)) != (spec is not None):
            raise BundleError(f"{where}: '{field}' must be given exactly when the model has {kind} features")
    if manifest.task == "regression" and manifest.output("prediction") is None:
        raise BundleError(f"{where}: a regression model needs an output with role 'prediction'")
    if manifest.task == "classification":
        if manifest.output("label") is None:
            raise BundleError(f"{where}: a classification model needs an output with role 'label'")
        if not manifest.classes:
            raise BundleError(f"{where}: a classification model needs its class labels in 'classes'")
    if manifest.task == "anomaly" and any(manifest.output(r) is None for r in ("label", "score", "decision")):
        raise BundleError(f"{where}: an anomaly model needs outputs with roles 'label', 'score' and 'decision'")
    _check_within_bound(manifest, where)


def _check_within_bound(manifest: Manifest, where: Path) -> None:
    """Never serve beyond the stated bound: a failed parity check, or an approximate export whose recorded
    error exceeds the bound it declares, is refused."""
    parity, approx = manifest.parity, manifest.approximation
    if parity is not None and not parity.passed:
        raise BundleError(f"{where}: its parity check failed (max rel diff {parity.max_rel_diff:.3g}); export "
                          "it again")
    if approx is not None and (parity is None or parity.max_abs_diff > approx.max_abs_error
                               or parity.max_rel_diff > approx.max_rel_error):
        measured = "no parity check" if parity is None else (
            f"max abs diff {parity.max_abs_diff:.3g}, max rel diff {parity.max_rel_diff:.3g}")
        raise BundleError(f"{where}: an approximate export whose parity ({measured}) exceeds its stated bound "
                          f"(max abs error {approx.max_abs_error:.3g}, max rel error {approx.max_rel_error:.3g}); "
                          "import it again with --approximate")


def write_bundle(
    dest: str | os.PathLike[str],
    onnx_bytes: bytes,
    manifest: dict[str, Any],
    *,
    overwrite: bool = False,
    explain: bytes | None = None,
    tensor: tuple[bytes, dict[str, Any]] | None = None,
) -> Path:
    """Write a bundle atomically: it appears complete at ``dest`` or not at all.

    ``manifest`` holds every field but ``model``, which is computed here from ``onnx_bytes``. ``explain``
    (``explain.npz``) is written beside it, its ``file``, ``sha256`` and ``size_bytes`` added to the
    manifest's ``explain`` section (which gives the rest). ``tensor``: the tensor graph and the rest of its
    manifest section (``TensorModel``), written as ``model.tensor.onnx``.
    The bundle is loaded into onnxruntime and checked before it is moved into place.
    """
    from tabserve.core.model import Model  # the full check needs the runtime; keep it lazy

    dest = Path(dest).expanduser()
    if dest.exists() and not overwrite:
        raise BundleError(f"{dest} already exists; choose another folder or allow overwriting", path=str(dest))
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fields = {**manifest, "model": ModelFile(
        sha256=sha256(onnx_bytes), size_bytes=len(onnx_bytes), opsets=_opsets(onnx_bytes),
    ).model_dump()}
    if explain is not None:
        fields["explain"] = {**manifest.get("explain", {}), "file": EXPLAIN_FILE, "sha256": sha256(explain),
                             "size_bytes": len(explain)}
    else:  # a section copied from another bundle describes a file this one does not have
        fields.pop("explain", None)
    if tensor is not None:
        fields["tensor_model"] = {**tensor[1], "file": TENSOR_MODEL_FILE, "sha256": sha256(tensor[0]),
                                  "size_bytes": len(tensor[0])}
    else:
        fields.pop("tensor_model", None)
    staging = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        _write_synced(staging / MODEL_FILE, onnx_bytes)
        if explain is not None:
            _write_synced(staging / EXPLAIN_FILE, explain)
        if tensor is not None:
            _write_synced(staging / TENSOR_MODEL_FILE, tensor[0])
        text = json.dumps(Manifest.model_validate(fields).model_dump(mode="json"), indent=2, allow_nan=False)
        _write_synced(staging / MANIFEST_FILE, text.encode())
        Model.from_bundle(read_bundle(staging))
        _publish(staging, dest, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first: leave no empty model folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return dest


def _publish(staging: Path, dest: Path, overwrite: bool) -> None:
    try:
        if overwrite and dest.exists():
            retired = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, retired)
            os.rename(staging, dest)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, dest)  # fails if another writer published dest meanwhile
    except OSError as exc:
        raise BundleError(f"cannot publish the bundle at {dest}: {exc.strerror} (did another process write "
                          "the same version at the same time? train again for the next version)",
                          path=str(dest)) from exc


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _opsets(onnx_bytes: bytes) -> dict[str, int]:
    try:
        import onnx
    except ImportError:  # the serving install has no onnx package; opsets are informative only
        return {}
    model = onnx.load_model_from_string(onnx_bytes)
    return {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
