"""The HTTP functions (auth, predict, gradcam, history), their cores and the local gateway.

Lean on purpose: functions-framework, Flask, PyJWT, libpass, Pillow, NumPy, urllib3 and the
storage layer; never TensorFlow (DESIGN.md decision 1). The model server is reached over REST.
"""
