"""The CNN-ViT model (Keras 3 / TensorFlow): class names, presets, layers, `build_model`, the
shared preprocessing and the Grad-CAM maths.

Nothing of ours is imported here, and nothing that touches storage. `cnn_vit.config` (the class
list and presets) imports no TensorFlow; `layers`, `model`, `preprocessing` and `gradcam` do, and
are imported explicitly.
"""
