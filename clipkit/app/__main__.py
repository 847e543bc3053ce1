"""`python -m clipkit.app`: see clipkit.app.cli."""

import sys

from clipkit.app.cli import main

sys.exit(main())
