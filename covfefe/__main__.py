"""Allow ``python -m covfefe``."""

import sys

from covfefe.cli import main

sys.exit(main())
