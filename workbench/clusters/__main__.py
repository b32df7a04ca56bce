"""``python -m workbench.clusters create|list|show|destroy|backup|perform``: the same as ``workbench clusters``."""

import sys

from workbench.cli import main

sys.exit(main(["clusters", *sys.argv[1:]]))
