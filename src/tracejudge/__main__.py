"""``python -m tracejudge``: the same as the ``tracejudge`` command."""

import sys

from tracejudge.cli import main

sys.exit(main())
