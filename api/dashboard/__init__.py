"""The control-room dashboard: a page served by the API process (same origin, same
tokens and roles), and the figures it shows that no other route gives.

``pages.router`` serves the page at ``/`` and ``/dashboard`` and its static files;
``api.routes.dashboard_api`` serves building tiles and service figures under
``/api/v1``. The page itself is plain JavaScript modules, CSS and SVG in
``static/``: nothing to build at install time. See docs/dashboard.md.
"""
