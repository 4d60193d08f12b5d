"""``python -m onlinenorm.cli``: the ``onlinenorm`` command."""

import sys

from onlinenorm.cli import main

sys.exit(main())
