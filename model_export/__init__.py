"""SavedModel export (TensorFlow): the CNN-ViT as the model TF Serving serves.

`model_export.export` writes the signatures, identity asset and model info the model contract
names; `model_export.warmup` the warmup records TF Serving replays at load. The registry that
publishes and promotes exports is the lean `model_contract` package.
"""
