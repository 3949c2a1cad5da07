"""`python -m loopwright`: the same entry point as the `loopwright` command."""

import sys

from loopwright.runtime.cli import main

sys.exit(main())
