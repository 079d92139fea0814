"""Generated protocol stubs."""
