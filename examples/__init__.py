"""Runnable examples for coterie."""
