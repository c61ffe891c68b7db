"""`python -m mmdgm ...`: the same as the `mmdgm` command."""

import sys

from mmdgm.cli import main

sys.exit(main())
