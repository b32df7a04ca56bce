"""``python -m workbench.inventory serve|exec|exec-auth|status``: the same as ``workbench inventory``."""

import sys

from workbench.cli import main

sys.exit(main(["inventory", *sys.argv[1:]]))
