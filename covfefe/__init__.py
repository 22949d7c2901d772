"""covfefe-flow: collect tweets, train a character-level recurrent network, generate fake tweets.

The package holds all the logic; the notebooks, the CLI and the API call it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("covfefe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
