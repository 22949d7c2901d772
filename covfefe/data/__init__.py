"""Getting tweets in: archive import, the X API collector, cleaning and the local dataset."""
