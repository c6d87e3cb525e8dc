"""Start the review server inside another command (``loopline up``, ``loopline demo``)."""
from __future__ import annotations

import secrets

from loopline.connectors.broker import port_or_free
from loopline.connectors.review.app import ReviewServer
from loopline.connectors.review.service import add_reviewer
from loopline.connectors.review.settings import ReviewSettings


def start_review_server(settings, demo_login: bool = False) -> tuple[ReviewServer, str | None]:
    """A running review server for ``settings``; with ``demo_login`` also a senior reviewer
    ``demo`` with PII clearance and a fresh random password, returned for printing."""
    rs = ReviewSettings.from_settings(settings, port=port_or_free(settings.review_port))
    server = ReviewServer(rs)
    password = None
    if demo_login:
        password = secrets.token_urlsafe(9)
        add_reviewer(server.service.store, "demo", "senior", True, password)
    server.start()
    return server, password
