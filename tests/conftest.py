"""Loaded by pytest before any test module: importing the package sets the Keras 2 switch (components/__init__.py)
before a test module imports TensorFlow itself, so `pytest` works without TF_USE_LEGACY_KERAS in the shell."""

import components  # noqa: F401  (the import is the point: see the docstring)
