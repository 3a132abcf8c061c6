"""`python -m training_job`: the training job's container command (see `training_job.cli`)."""

from training_job.cli import main

raise SystemExit(main())
