"""Stands in for scikit-learn in the processes the tests start (see tests/conftest.py): no such module."""

raise ImportError("scikit-learn is a test-only reference: the processes the tests start run without it")
