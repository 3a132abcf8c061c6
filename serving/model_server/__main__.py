"""`python -m serving.model_server`: the local stand-in for tensorflow_model_server."""

import os

# TensorFlow reads its log level when first imported: keep its C++ chatter out of the JSON logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving.model_server.server import main

raise SystemExit(main())
