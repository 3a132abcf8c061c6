"""The local development stack behind `make run` and `make run-s3`."""
