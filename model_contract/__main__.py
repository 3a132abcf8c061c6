"""`python -m model_contract`: list, show, download, publish, promote and roll back versions."""

from model_contract.cli import main

raise SystemExit(main())
