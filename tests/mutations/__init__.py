"""Bugs planted in the solution notebooks, and other correct ways to write them, kept as data for the tests."""
