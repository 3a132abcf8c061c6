"""`python -m migration SOURCE [--dry-run] [--promote]`."""

from migration.cli import main

raise SystemExit(main())
