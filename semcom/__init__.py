"""Generative semantic communication for video retrieval: the shared core."""

__version__ = "0.1.0"
