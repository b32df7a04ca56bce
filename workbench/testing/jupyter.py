"""JupyterLab and headless Chromium (Playwright) fixtures for browser tests."""
