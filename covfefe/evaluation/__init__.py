"""Measuring a trained model: the `covfefe evaluate` and `covfefe mix` commands (`evaluate`),
sample quality (`quality`) and what a notebook shows of it (`report`).

May import every stage before it (data, lm, inference, training); never serving.
"""
