"""lmo: the LanguageModel operator (import package; the source folder is `operator/`)."""

__version__ = "0.1.0"
