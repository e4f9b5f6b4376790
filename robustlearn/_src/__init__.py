"""Private implementation; the public names live in the ``robustlearn`` namespaces."""
