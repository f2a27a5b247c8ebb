"""`python -m exactmaild`: the same entry point as the `exactmaild` script."""

import sys

from exactmaild.cli.main import main

sys.exit(main())
