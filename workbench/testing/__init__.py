"""Test harness that ships with workbench: real services on loopback and a pytest plugin.

Load the plugin with ``-p workbench.testing.plugin`` (the project's pytest configuration does).
"""
