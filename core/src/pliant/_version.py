"""pliant-core's version, in a module of its own so that any part (the plugin registry,
the CLI) can read it without importing the package face."""

__version__ = "0.1.0"
