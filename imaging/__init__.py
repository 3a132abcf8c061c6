"""Lean image conversions shared by serving and training (no TensorFlow): DICOM to PNG."""
