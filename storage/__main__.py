"""`python -m storage`: create the hierarchy, list, copy folders in and out, read and remove."""

from storage.cli import main

raise SystemExit(main())
