"""Keras, imported once with TensorFlow's start-up noise filtered out of stderr.

Importing TensorFlow on a machine without a GPU writes lines such as ``Could not find cuda
drivers``, ``oneDNN custom operations are on`` and ``E0000 ... failed call to cuInit``: the
C++ side writes them straight to file descriptor 2, some before its logging is set up (so
``TF_CPP_MIN_LOG_LEVEL`` cannot hide them), and the last one reads as an error although
nothing is wrong. Notebooks show them as red blocks. `import_keras` is the one place covfefe
first imports Keras (training, and loading a Keras model to evaluate it): it captures what
the import and the device probe write to stderr and passes on every line but those; Python
warnings and real errors still show. It also keeps TensorFlow's Python logger at WARNING
(its INFO lines, "Assets written to ...", are progress, not news).
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

# Lines TensorFlow/XLA write at start-up that say nothing is wrong: absl's banner, the CUDA
# probe on a machine without a GPU, and the CPU build notices. Anything else is passed on.
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics"
    r"|cpu_feature_guard|port)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate "
    r"compiler flags\."
)


def _is_noise(line: str) -> bool:
    return bool(NOISE.fullmatch(line.rstrip("\n")))


@contextlib.contextmanager
def filtered_stderr():
    """Capture what is written to file descriptor 2 inside the block; then write it to
    ``sys.stderr`` without the lines that `NOISE` matches."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if not _is_noise(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def import_keras():
    """Return the ``keras`` module, imported (the first time) without TensorFlow's noise."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    # Hides TensorFlow's C++ INFO lines once its logging is set up; warnings and errors stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with filtered_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, inside
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    return keras
