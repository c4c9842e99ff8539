"""Jupyter widgets and an async client for StableStudio's pay-per-generation image and video API."""
