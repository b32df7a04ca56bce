"""``python -m workbench.commits ARGS``: the same as ``workbench commits ARGS`` (pyrainer's command line)."""

import sys

from workbench.commits.cli import main

sys.exit(main())
