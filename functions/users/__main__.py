"""Entry point of `python -m functions.users`."""

import sys

from functions.users.cli import main

sys.exit(main())
