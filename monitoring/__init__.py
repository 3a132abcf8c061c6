"""Monitoring of the served models from their inference records (lean: no TensorFlow).

`compare`: the stable and the canary model on live traffic (routed users and shadow answers),
with a promotion helper that promotes the canary only when the comparison meets the given
thresholds and the stable version is still the one compared. `drift`: per day and model
version, the answers and the inputs compared with the training data and the previous weeks
(population stability index per feature). Both write JSON and PNG plots under
`output/monitoring/`; `python -m monitoring` or `xray-monitor`.
"""
