"""A model file to import: which format it is, and the fitted model in it.

Native formats load without pickle: LightGBM's text model (``booster.save_model("m.txt")``) and
XGBoost's JSON or UBJSON model (``booster.save_model("m.json")``) and CatBoost's binary model
(``model.save_model("m.cbm")``, which starts with ``CBM1``). A pickle (``.pkl``, ``.pickle``,
``.joblib``, or a file that starts like one) is refused unless the caller trusts it: unpickling runs
whatever code the file names, so the refusal comes before anything reads the file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tabserve.errors import ModelFileError

Format = Literal["lightgbm-text", "xgboost-json", "xgboost-ubjson", "catboost-cbm", "pickle"]
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol 2 or later starts with b"\x80" and its protocol

HOW_TO_SAVE = ("LightGBM: booster.save_model('model.txt') (an LGBM* model: model.booster_.save_model(...)); "
               "XGBoost: booster.save_model('model.json') or 'model.ubj' (an XGB* model: "
               "model.get_booster().save_model(...)); CatBoost: model.save_model('model.cbm')")
PICKLE_RISK = ("unpickling runs arbitrary code from the file, with your permissions: only import a pickle "
               "you produced or trust, and pass --trust-pickle to say so. A native model file (LightGBM "
               "text, XGBoost JSON, CatBoost .cbm) or retraining with `tabserve train` avoids pickle")


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A model file as read: its fitted model, its format, and the SHA-256 of its bytes."""

    model: Any  # a fitted scikit-learn model or pipeline, or a lightgbm/xgboost Booster
    format: Format
    name: str
    sha256: str  # hex digest of the file's bytes
    warnings: list[str]  # what loading it warned about (e.g. pickled with another scikit-learn)


def is_pickle_name(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def read_model_file(path: str | Path, *, trust_pickle: bool = False) -> ModelFile:
    """Read and load a model file; ``ModelFileError`` for an unknown format, an unreadable file, or a
    pickle not trusted (refused before it is opened, when its name says pickle)."""
    p = Path(path).expanduser()
    if is_pickle_name(p) and not trust_pickle:
        raise refuse_pickle(p)
    raw = _read(p)
    fmt = detect_format(raw, p)
    if fmt == "pickle" and not trust_pickle:
        raise refuse_pickle(p, by_content=True)
    digest = hashlib.sha256(raw).hexdigest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _LOADERS[fmt](raw, p)
    notes = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    return ModelFile(model, fmt, p.name, digest, notes)


def refuse_pickle(path: Path, *, by_content: bool = False) -> ModelFileError:
    what = "starts like a pickle" if by_content else f"is a pickle ({path.suffix} file)"
    return ModelFileError(f"{path.name} {what} and was not unpickled: {PICKLE_RISK}", path=str(path))


def detect_format(raw: bytes, path: Path) -> Format:
    """The format from the file's first bytes (the name only for pickles): ``ModelFileError`` if unknown."""
    head = raw[:256].lstrip()
    if is_pickle_name(path) or (len(raw) > 1 and raw[0] == 0x80 and raw[1] in _PICKLE_PROTOCOLS):
        return "pickle"
    if head.startswith((b"tree\n", b"tree\r\n")):
        return "lightgbm-text"
    if raw.startswith(b"CBM1"):
        return "catboost-cbm"
    if head.startswith(b"{"):
        if b"learner" not in raw[:4096]:
            kind = "JSON" if head[1:].lstrip().startswith(b'"') else "UBJSON or JSON"
            raise ModelFileError(f"{path.name} is {kind} but not an XGBoost model (it has no 'learner'); "
                                 f"save the model with {HOW_TO_SAVE}", path=str(path))
        return "xgboost-json" if head[1:].lstrip().startswith(b'"') else "xgboost-ubjson"
    raise ModelFileError(
        f"{path.name}: unknown model format (it starts with {raw[:16]!r}); tabserve imports a LightGBM "
        f"text model, an XGBoost JSON/UBJSON model, a CatBoost .cbm model, or (with --trust-pickle) a pickled scikit-learn model "
        f"({', '.join(PICKLE_SUFFIXES)}). Save yours with {HOW_TO_SAVE}", path=str(path))


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file", path=str(path)) from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    if not raw.strip():
        raise ModelFileError(f"{path.name} is empty", path=str(path))
    return raw


def _library(name: str, path: Path) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        dist = "xgboost" if name == "xgboost" else name
        raise ModelFileError(f"{path.name} is a {name} model; reading it needs {name}: pip install {dist}",
                             path=str(path)) from None


def _load_lightgbm(raw: bytes, path: Path) -> Any:
    lightgbm = _library("lightgbm", path)
    try:
        return lightgbm.Booster(model_str=raw.decode("utf-8"))
    except (UnicodeDecodeError, lightgbm.basic.LightGBMError) as exc:
        raise ModelFileError(f"{path.name} cannot be read as a LightGBM text model: {_first_line(exc)}",
                             path=str(path)) from exc


def _load_xgboost(raw: bytes, path: Path) -> Any:
    xgboost = _library("xgboost", path)
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgboost.core.XGBoostError as exc:
        raise ModelFileError(f"{path.name} cannot be read as an XGBoost model: {_first_line(exc)}",
                             path=str(path)) from exc
    return booster


def _load_catboost(raw: bytes, path: Path) -> Any:
    catboost = _library("catboost", path)
    model = catboost.CatBoost()
    try:
        model.load_model(blob=raw)
    except catboost.CatBoostError as exc:
        raise ModelFileError(f"{path.name} cannot be read as a CatBoost model: {_first_line(exc)}",
                             path=str(path)) from exc
    return model


def _load_pickle(raw: bytes, path: Path) -> Any:
    import joblib  # scikit-learn's dependency; reads plain pickles too

    try:
        return joblib.load(io.BytesIO(raw))
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise ModelFileError(f"{path.name} cannot be unpickled: {type(exc).__name__}: {_first_line(exc)}; "
                             "unpickle it with the library versions that pickled it, and save the model in "
                             "a native format or retrain it with `tabserve train`", path=str(path)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # XGBoost prefixes "[hh:mm:ss] file.cc:123: " and appends a stack trace
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(": ", 1)[1] if line.startswith("[") and ": " in line else line


_LOADERS = {"lightgbm-text": _load_lightgbm, "xgboost-json": _load_xgboost, "xgboost-ubjson": _load_xgboost,
            "catboost-cbm": _load_catboost, "pickle": _load_pickle}
