"""Compiling the small numeric kernels (numba): one place for how they are compiled, and the
helpers that several kernels call."""

import numpy as np
from numba import njit


def compiled(function):
    """Compile with numba, cached on disk where numba finds a writable folder (beside this
    file, or the user's cache folder); where there is none (a read-only install without a
    home), compiled anew in each process rather than not at all."""
    try:
        return njit(nogil=True, cache=True, error_model="numpy")(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True, error_model="numpy")(function)


@compiled
def largest(values):
    """The largest of a row of values (-inf for none), for a kernel to call."""
    top = -np.inf
    for value in values:
        top = max(top, value)
    return top
