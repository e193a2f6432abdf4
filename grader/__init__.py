"""Automated grading and assignment toolkit for Jupyter notebook assignments.

Importing this package has no side effects: nothing is registered, read or written
until a function is called.
"""

__version__ = "0.1.0"
