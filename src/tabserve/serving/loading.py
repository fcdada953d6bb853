"""The one way a model version becomes servable: read and verify the bundle, build its session, warm it up.

The first load, a reload, a pinned version, the CLI's preload and a Ray replica all come through here, so a
version's load time (``load_seconds``, shown by the models endpoints) always measures the same work.
"""

from __future__ import annotations

import os
import time

from tabserve.core.bundle import read_bundle
from tabserve.core.model import Model
from tabserve.core.runtime import RuntimeOptions


def load_and_warm(path: str | os.PathLike[str], options: RuntimeOptions) -> Model:
    t0 = time.perf_counter()
    model = Model.from_bundle(read_bundle(path), options)
    model.warm_up()
    model.load_seconds = time.perf_counter() - t0
    return model
