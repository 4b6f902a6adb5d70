"""lmo: the LanguageModel operator (import package; the source folder is `operator/`)."""

from importlib.metadata import version as _version

# One version for the package, the converter (lmo_runtime), the images and the chart's
# appVersion: pyproject.toml's, read from the installed distribution.
__version__ = _version("lmo")
