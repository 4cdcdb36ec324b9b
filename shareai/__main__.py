"""``python -m shareai`` runs the command line."""

import sys

from shareai.cli import main

sys.exit(main())
