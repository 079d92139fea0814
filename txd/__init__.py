"""Transmitter daemon: video in, people understood, records out."""
