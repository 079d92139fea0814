"""Standard LDPC base matrices shipped as package data."""
