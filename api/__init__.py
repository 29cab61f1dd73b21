"""The HTTP API: FastAPI application, bearer-token auth and routes.

Import ``api.app.create_app`` for the application and ``api.auth`` for the token
functions the CLI uses. Nothing outside ``api/`` except the CLI imports this package.
"""
