"""Serving: the model sync (`serving.sync`) and the local model server (`serving.model_server`).

The sync mirrors the registry's served versions from storage to TF Serving's base path and
writes `models.config`; it imports storage only. The model server stands in for
tensorflow_model_server where the binary is missing. Importing this package imports neither
TensorFlow nor boto3.
"""
