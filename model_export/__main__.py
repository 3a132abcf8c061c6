"""`python -m model_export export KERAS_FILE EXPORT_DIR`: export a trained model."""

from model_export.cli import main

raise SystemExit(main())
