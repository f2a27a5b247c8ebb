"""`python -m exactmaild`: the same entry point as the `exactmaild` script."""

import sys

# Through the package, so that `exactmaild.cli.main` stays the function (see cli/__init__).
from exactmaild.cli import main

sys.exit(main())
