"""Compiling the small numeric kernels (numba): one place for how they are compiled, and the
helpers that several kernels call."""

import numpy as np
from numba import njit


def compiled(function=None, *, inline: bool = False):
    """Compile with numba, cached on disk where numba finds a writable folder (beside this
    file, or the user's cache folder); where there is none (a read-only install without a
    home), compiled anew in each process rather than not at all.

    ``@compiled(inline=True)`` is for a small scalar function that kernels call in their
    inner loops: numba pastes its body into the caller, where LLVM can vectorise the loop
    around it. Left as a call, LLVM may not inline it (a tuple return, a body it finds too
    long) and the loop then runs one element at a time: the LSTM pass ran 5.5x slower so."""
    if function is None:
        return lambda function: compiled(function, inline=inline)
    options = {"nogil": True, "error_model": "numpy", "inline": "always" if inline else "never"}
    try:
        return njit(cache=True, **options)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(**options)(function)


@compiled
def largest(values):
    """The largest of a row of values (-inf for none), for a kernel to call."""
    top = -np.inf
    for value in values:
        top = max(top, value)
    return top
