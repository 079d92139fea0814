"""Retrieval at the receiver: describe records, embed descriptions, index them, parse and rank queries."""
