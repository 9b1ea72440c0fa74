"""`python -m starpod.cli ...`: the same as the `starpod` console script."""
import sys

from . import main

sys.exit(main())
