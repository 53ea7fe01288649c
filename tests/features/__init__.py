"""Tests of the features stage (a package, so its helper module names cannot clash with other test folders)."""
