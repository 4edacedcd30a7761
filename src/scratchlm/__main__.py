"""`python -m scratchlm ...` (and `torchrun -m scratchlm train ...`)."""

import sys

from .cli import main

sys.exit(main())
