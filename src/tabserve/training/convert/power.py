"""PowerTransformer (Yeo-Johnson, Box-Cox), then its StandardScaler, as scipy and scikit-learn compute them.

Yeo-Johnson (``scipy.stats.yeojohnson``) per column with ``lambdas_[j] = l``: ``x >= 0``:
``expm1(l * log1p(x)) / l`` (``log1p(x)`` when ``|l| < eps``); ``x < 0``:
``-expm1((2 - l) * log1p(-x)) / (2 - l)`` (``-log1p(-x)`` when ``|l - 2| <= eps``). Box-Cox
(``scipy.special.boxcox``): ``log(x)`` when ``|l| < 1e-19``, ``expm1(l * log(x)) / l`` while
``l * log(x) < 709.78``, else ``sign(l) * exp(l * log(x) - log|l|) - 1 / l``. ONNX has no ``log1p`` or
``expm1``: ``elementwise``'s Goldberg and Kahan forms, a few ulps each (measured on the transform:
``power.MEASURED``); the scaler after it is exact. NaN stays NaN.
"""

from __future__ import annotations

import numpy as np
import sklearn
from sklearn.preprocessing import PowerTransformer
from sklearn.utils.fixes import parse_version

from tabserve.errors import ExportError
from tabserve.training.convert.elementwise import expm1, log1p
from tabserve.training.convert.graph import Graph, Tensor
from tabserve.training.convert.preprocess import numeric

# scikit-learn < 1.9 transforms Yeo-Johnson with its own ``(power(x + 1, l) - 1) / l`` (no log1p/expm1),
# which differs from scipy's form by far more than the contract allows near 0 and for large powers
# (scikit-learn PR #33272, "Changed models" in 1.9): the export reproduces only scipy's form.
YEO_JOHNSON_SINCE = "1.9"
_YEO_JOHNSON_IS_SCIPYS = parse_version(sklearn.__version__) >= parse_version(YEO_JOHNSON_SINCE)
from tabserve.training.convert.registry import convert, register


def _yeo_johnson(graph: Graph, x: str, lambdas: np.ndarray) -> str:
    c, eps = graph.const, np.finfo(np.float64).eps
    zero = c(np.float64(0.0), "zero")
    positive = graph.op("GreaterOrEqual", [x, zero])
    up = log1p(graph, graph.op("Max", [x, zero]))  # where x >= 0 (the other rows are not used)
    down = log1p(graph, graph.op("Max", [graph.op("Neg", [x]), zero]))  # -x where x < 0
    lam, other = c(lambdas, "lambdas"), c(2.0 - lambdas, "two_minus_lambdas")
    up_l = graph.op("Div", [expm1(graph, graph.op("Mul", [lam, up])), lam])
    up = graph.op("Where", [c(np.abs(lambdas) < eps, "log_columns"), up, up_l])
    down_l = graph.op("Div", [expm1(graph, graph.op("Mul", [other, down])), other])
    down = graph.op("Where", [c(np.abs(lambdas - 2) > eps, "power_columns"), down_l, down])
    out = graph.op("Where", [positive, up, graph.op("Neg", [down])])
    # NaN: scipy takes it down the x < 0 branch, NaN either way; Max(NaN, 0) is 0 in onnxruntime
    return graph.op("Where", [graph.op("IsNaN", [x]), x, out])  # type: ignore[return-value]


def _box_cox(graph: Graph, x: str, lambdas: np.ndarray) -> str:
    c = graph.const
    lam = c(lambdas, "lambdas")
    log = graph.op("Log", [x])
    product = graph.op("Mul", [lam, log])
    usual = graph.op("Div", [expm1(graph, product), lam])
    huge = graph.op("Sub", [graph.op("Mul", [c(np.sign(lambdas), "signs"),
                                             graph.op("Exp", [graph.op("Sub", [product, c(np.log(np.abs(lambdas)),
                                                                                          "log_lambdas")])])]),
                            c(1.0 / lambdas, "inverse_lambdas")])
    out = graph.op("Where", [graph.op("Less", [product, c(np.float64(709.78), "limit")]), usual, huge])
    return graph.op("Where", [c(np.abs(lambdas) < 1e-19, "log_columns"), log, out])  # type: ignore[return-value]


@register(PowerTransformer)
def convert_power_transformer(graph: Graph, transformer: PowerTransformer, x: Tensor) -> Tensor:
    x = numeric(x, transformer)
    lambdas = np.asarray(transformer.lambdas_, dtype=np.float64)
    if transformer.method == "yeo-johnson":
        if not _YEO_JOHNSON_IS_SCIPYS:
            raise ExportError(
                f"PowerTransformer(method='yeo-johnson') is exported exactly as scikit-learn >= {YEO_JOHNSON_SINCE} "
                f"computes it (scipy.stats.yeojohnson); this is {sklearn.__version__}, which computes "
                f"(power(x + 1, l) - 1) / l itself: upgrade scikit-learn")
        out = _yeo_johnson(graph, x.name, lambdas)
    elif transformer.method == "box-cox":
        with np.errstate(divide="ignore"):
            out = _box_cox(graph, x.name, lambdas)
    else:
        raise ExportError(f"PowerTransformer(method={transformer.method!r}): yeo-johnson and box-cox are exported")
    transformed = Tensor(out, x.width, nan=x.nan)
    if transformer.standardize:
        return convert(graph, transformer._scaler, transformed)  # type: ignore[no-any-return]
    return transformed
