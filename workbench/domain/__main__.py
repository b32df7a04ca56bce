"""``python -m workbench.domain agent ...``: the same as ``workbench domain``."""

import sys

from workbench.cli import main

sys.exit(main(["domain", *sys.argv[1:]]))
