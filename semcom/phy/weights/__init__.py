"""Trained learned-phy models (JSON) and their model card, shipped as package data."""
