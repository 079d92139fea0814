"""Channel simulator: a Link proxy that impairs bursts like a wireless channel."""
