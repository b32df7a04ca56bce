#! /usr/bin/env python
# From SmartDataProjects/dynamo, test/dynamo_teardown.py at commit 911f90c88702c9f7ed7a885744028c5705543e88
# (https://github.com/SmartDataProjects/dynamo), MIT License: see LICENSE in this directory.
# Ported to Python 3 syntax, logic kept. What changed: 2to3's dict fixer only: `getattr(inv, attr).items()` became
#   `list(getattr(inv, attr).items())` (a Python 3 view would change size under the deletes).
# Run here as an application: `workbench inventory exec --write` by a non-root user (as root it takes
# its shell() branch, which calls Dynamo's own command-line tools).

import os
import subprocess

from dynamo import dataformat
from dynamo.core.executable import inventory


def shell():
    subprocess.check_call(
        """
        # This first line is only here so that it doesn't need reauthorized
        # every time there's in edit
        dynamo-exec-auth -u dynamo -x {script} --title teardown > /dev/null 2>&1
        su -c 'dynamo -t teardown -W {script}' dynamo > /dev/null 2>&1
        """.format(
            script=__file__.replace('.pyc', '.py')),
        shell=True)


def main(inv):
    for attr in ['partitions', 'sites', 'groups', 'datasets']:
        for key, obj in list(getattr(inv, attr).items()):
            if key is not None:
                inv.delete(obj)


if __name__ == '__main__':
    if os.getuid():
        main(inventory)
    # We get here if we're running the script as root user (happens in docker all the time)
    else:
        shell()
