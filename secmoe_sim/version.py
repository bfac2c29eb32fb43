"""The version of secmoe-sim: the one place it is written (``pyproject.toml`` reads it from here).

Bump it whenever simulated numbers change (and say why in ``CHANGELOG.md``): sweep results are
cached under a key that includes it, and the golden summaries record the version that made them.
Never imported from the package root, so every layer can use it without importing the others.
"""

__version__ = "0.8.3"
