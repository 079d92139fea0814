"""The understanding agent: attribute backends behind one interface."""

from txd.understanding.base import Understander, Understanding, check_crop

__all__ = ["Understander", "Understanding", "check_crop"]
