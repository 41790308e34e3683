"""The fixture notebook here is opened by tests/test_browser.py in JupyterLab, not run by nbval."""

collect_ignore_glob = ["*.ipynb"]
