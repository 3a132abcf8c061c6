"""Bring an original system's storage tree into this system: `python -m migration SOURCE`.

Users file kept as is, `history.csv` rows as inference records, its Grad-CAM images kept, its
`.hdf5` weights as a published model version. Idempotent and resumable: every write is
create-only and keyed by what it comes from, so a second run finds everything done. The weights
step imports TensorFlow (`migration.weights`); the others do not.
"""
