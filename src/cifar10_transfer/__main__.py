"""`python -m cifar10_transfer`."""

import sys

from .cli import main

sys.exit(main())
