"""Data files of the hand models (see LICENSE.md); a package so that setuptools ships them."""
