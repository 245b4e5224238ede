"""Bundled profile files (*.toml), shipped as `hil_tune.bundled_profiles`.

A package rather than loose data so that importlib.resources finds the files the same way in an
editable install, a wheel install and a source checkout.
"""
