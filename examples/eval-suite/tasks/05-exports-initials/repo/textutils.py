"""Small text helpers."""

__all__ = ["shout"]


def shout(text):
    """'hi' -> 'HI!'"""
    return text.upper() + "!"
