"""Generators PULSE can search: `dcgan` (the embedded default) and `stylegan1`."""
