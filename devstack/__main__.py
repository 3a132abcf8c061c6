"""`python -m devstack run [--s3]`: the whole system on this machine."""

from devstack.cli import main

raise SystemExit(main())
