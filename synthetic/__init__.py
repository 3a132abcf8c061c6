"""Synthetic chest X-rays and the demo model trained on them, for tests, `make run` and bench.

`synthetic.xrays` (NumPy and Pillow) draws films whose class pattern is known to the pixel and
writes data sets in the COVID-QU-Ex layout; `synthetic.demo_model` trains the `small` preset on
them with the real training loop (TensorFlow). No real chest X-ray data set is needed anywhere.
"""
