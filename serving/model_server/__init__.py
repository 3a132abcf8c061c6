"""A local model server that speaks TensorFlow Serving's REST and gRPC APIs.

For machines without the TF Serving binary (DESIGN.md decision 8): same model layout, same
`models.config`, same polling and swap behaviour, same wire contract
(reference/tfserving.md). Run it with `python -m serving.model_server` and TF Serving's flags.
Importing this package does not import TensorFlow; `serving.model_server.server` does.
"""
