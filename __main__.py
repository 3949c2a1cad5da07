"""`python -m loopwright`: the same entry point as the `loopwright` command."""

import sys

from .runtime.cli import main

sys.exit(main())
