"""Serving many requests at once: the engine that steps every request in flight as one batch
(`engine`). The Flask app in ``serve/`` is its only caller.

May import the top-level modules, `covfefe.lm` and `covfefe.inference`.
"""
