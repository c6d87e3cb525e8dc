"""Reviewer tools: the web review queue, the terminal reviewer and :class:`ReviewerClient`.

* ``store``    – the bounded SQLite store of waiting tasks, leases, reviewers.
* ``auth``     – scrypt password hashes and signed session cookies.
* ``feed``     – Kafka edges: task consumer thread, correction publisher.
* ``app``      – the aiohttp app (HTML + JSON API + /metrics).
* ``client``   – :class:`ReviewerClient` for bridging annotation tools.
* ``cli``      – ``add_review_commands(subparsers)``.
"""
