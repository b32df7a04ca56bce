"""``python -m workbench.zdb serve|replica|shell``: the same as ``workbench zdb``."""

import sys

from workbench.cli import main

sys.exit(main(["zdb", *sys.argv[1:]]))
