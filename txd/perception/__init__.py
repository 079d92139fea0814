"""Perception: detect people, track them, choose a keyframe per track (heavy models load lazily)."""
