"""Compiling the small numeric kernels (numba): one place for how they are compiled."""

from numba import njit


def compiled(function):
    """Compile with numba, cached on disk where numba finds a writable folder (beside this
    file, or the user's cache folder); where there is none (a read-only install without a
    home), compiled anew in each process rather than not at all."""
    try:
        return njit(nogil=True, cache=True, error_model="numpy")(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return njit(nogil=True, error_model="numpy")(function)
