"""One way for tests to read any sparsec result as a numpy array, whatever the target returned."""

from __future__ import annotations

from typing import Any

import numpy as np


def host(x: Any) -> np.ndarray:
    """``x`` as a dense numpy array: a device tensor is copied to the host, a sparse tensor densified, a
    (CUDA) torch tensor copied to the CPU."""
    if hasattr(x, "to_host"):
        x = x.to_host()
    if hasattr(x, "to_numpy"):
        return x.to_numpy()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
