"""The browser test's helpers and fixture notebook: JupyterLab driven in headless Chromium."""
