"""Receiver daemon: regenerate, index and answer queries."""
