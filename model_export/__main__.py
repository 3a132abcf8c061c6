"""`python -m model_export`: list, show, publish, promote, roll back and export model versions."""

from model_export.cli import main

raise SystemExit(main())
