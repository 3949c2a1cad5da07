"""`python -m loopwright`: the same entry point as the `loopwright` command."""

import sys

from loopwright.cli.main import main

sys.exit(main())
