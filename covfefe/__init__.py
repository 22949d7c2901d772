"""covfefe-flow: collect tweets, train a character-level recurrent network, generate fake tweets.

The package holds all the logic; the notebooks, the CLI and the API call it.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) hides what matters; its warnings and
# errors still show. Set before anything imports TensorFlow; an explicit setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    __version__ = version("covfefe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
