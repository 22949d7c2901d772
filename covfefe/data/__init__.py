"""Getting tweets in: archive import, the X API collector, cleaning, the local dataset, and
what to look at in it before training (`explore`).

The first stage: imports only the top-level modules (config, errors, files, text).
"""
