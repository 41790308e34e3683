"""Helpers of the workshop tests: Binder's image built without Docker, Jupyter servers and their kernels."""
