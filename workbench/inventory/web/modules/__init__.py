"""The built-in web modules: each file here serves under ``/web/<file>/...`` and ``/data/<file>/...``.

``inventory`` serves the inventory's datasets, sites, groups, replicas and stats, and the
write pages inject and delete. ``_base`` holds what every module builds on (``WebModule``,
``HTMLMixin``); files starting with ``_`` are not served.
"""
