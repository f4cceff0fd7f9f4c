"""Serving the app: the uvicorn server with the gateway's graceful drain, and the supervisor
of several worker processes (`gateway serve --workers N`)."""
