"""``python -m cnncourse``: see :mod:`cnncourse.cli`."""

import sys

from cnncourse.cli import main

sys.exit(main())
