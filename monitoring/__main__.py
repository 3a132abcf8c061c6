"""`python -m monitoring compare|drift ...` (the `xray-monitor` command)."""

from monitoring.cli import main

raise SystemExit(main())
