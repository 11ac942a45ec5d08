"""Bundled scenarios; `web` is the default for `python -m loadtest`."""
