"""The review server: aiohttp app (HTML pages, JSON API, /metrics) around :class:`ReviewService`.

``build_app(settings)`` wires store, Kafka feed and publisher; :class:`ReviewServer` runs it on
a background thread (tests, embedding) and ``run_review_server`` in the foreground (CLI).
Authentication: a server-side session (``sessions``) whose random id is the cookie set by the
login form, or HTTP Basic on any request; both go through the failed-login throttle
(``throttle``: 429 + ``Retry-After``). Logout ends the session on the server. With
``tls_cert_file``/``tls_key_file`` the server speaks HTTPS and the cookie is ``Secure``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
import threading
import time
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from loopline.connectors.review import pages
from loopline.connectors.review import queue_view as qv
from loopline.connectors.review.feed import CorrectionPublisher, TaskFeed
from loopline.connectors.review.metrics import ReviewMetrics
from loopline.connectors.review.pg_store import open_store
from loopline.connectors.review.policy_marks import PolicyMarks, PolicyMarksFeed
from loopline.connectors.review.service import ReviewError, ReviewService
from loopline.connectors.review.sessions import SessionRegistry
from loopline.connectors.review.settings import QUEUE_OF_TIER, ReviewSettings
from loopline.connectors.review.store import ReviewStore
from loopline.streams.conventions import apply_conventions

COOKIE = "loopline_review"
_PUBLIC = {"/login", "/metrics", "/healthz", "/favicon.ico"}
SERVICE = web.AppKey("service", ReviewService)
SESSIONS = web.AppKey("sessions", SessionRegistry)
FEED = web.AppKey("feed", TaskFeed)
POLICY_FEED = web.AppKey("policy_feed", PolicyMarksFeed)
REVIEWER = web.RequestKey("reviewer", dict) if hasattr(web, "RequestKey") else "reviewer"


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def client_address(request: web.Request) -> str:
    """The address the login throttle counts: the peer, or with ``trust_forwarded_for`` the last
    ``X-Forwarded-For`` entry (the one your own proxy appended)."""
    if request.app[SERVICE].settings.trust_forwarded_for:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-1][:64]
    return request.remote or "unknown"


def _reviewer_from(request: web.Request) -> dict | None:
    """The reviewer of the request's Basic credentials or session; raises ``LoginThrottled``."""
    service = request.app[SERVICE]
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return service.login(name, password, client_address(request), method="basic")
    cookie = request.cookies.get(COOKIE)
    if cookie:
        name = request.app[SESSIONS].lookup(cookie, time.time())
        if name:
            return service.reviewer(name)  # None once the reviewer is removed
    return None


@web.middleware
async def auth_and_errors(request: web.Request, handler):
    reviewer = None
    try:
        if request.path not in _PUBLIC:
            reviewer = _reviewer_from(request)
            if reviewer is None:
                if _is_api(request):
                    sent = request.headers.get("Authorization", "").lower().startswith("basic ")
                    return web.json_response({"error": "Unknown name or wrong password." if sent else
                                              "Log in first: send HTTP Basic credentials or a session cookie."},
                                             status=401, headers={"WWW-Authenticate": 'Basic realm="loopline-review"'})
                return web.Response(text=pages.login_page("Log in to see the review queues.", kind="notice"),
                                    status=401, content_type="text/html")
            request[REVIEWER] = reviewer
        return await handler(request)
    except ReviewError as exc:
        message = str(exc)
        retry = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry)} if retry is not None else None
        if _is_api(request):
            return web.json_response({"error": message}, status=exc.status, headers=headers)
        return web.Response(text=pages.error_page(exc.status, message, reviewer), status=exc.status,
                            content_type="text/html", headers=headers)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


# ---------------------------------------------------------------- HTML
async def login_form(request: web.Request) -> web.Response:
    return _html(pages.login_page())


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    reviewer = request.app[SERVICE].login(str(form.get("name", "")), str(form.get("password", "")),
                                          client_address(request), method="form")
    if reviewer is None:
        return _html(pages.login_page("Unknown name or wrong password."), status=401)
    resp = web.Response(status=303, headers={"Location": "/"})
    sessions = request.app[SESSIONS]
    now = time.time()
    sessions.sweep(now)
    resp.set_cookie(COOKIE, sessions.start(reviewer["name"], now), httponly=True, samesite="Strict",
                    max_age=int(sessions.max_age_seconds), path="/", secure=request.secure)
    return resp


async def logout(request: web.Request) -> web.Response:
    """End the session on the server (its cookie is worthless from now on, wherever a copy is)."""
    cookie = request.cookies.get(COOKIE)
    if cookie:
        request.app[SESSIONS].end(cookie)
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def index(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    return _html(pages.index_page(service.queue_stats(), reviewer, service.queues_for(reviewer)))


async def queue_view(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    queue = request.match_info["queue"]
    view = qv.QueueQuery.from_query(request.query, service.settings.page_size)
    tasks = service.waiting(reviewer, queue, view.page_size, view.offset, view.filters)
    total = service.count_waiting(reviewer, queue, view.filters)
    return _html(qv.queue_page(queue, tasks, total, view, service.store.facets(queue), service.queue_stats(),
                               reviewer, service.queues_for(reviewer), service.counters(reviewer),
                               request.query.get("flash", "")))


async def claim_form(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    request.app[SERVICE].claim(task_id, request[REVIEWER])
    raise web.HTTPSeeOther(f"/tasks/{quote(task_id, safe='')}")


async def next_form(request: web.Request) -> web.Response:
    """Claim the most urgent waiting task of the queue (with the page's filters) and open it."""
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    queue = request.match_info["queue"]
    view = qv.QueueQuery.from_query(request.query, service.settings.page_size)
    task = service.claim_next(reviewer, queue, view.filters)
    if task is None:
        flash = request.query.get("flash", "")
        raise web.HTTPSeeOther(f"/queue/{queue}?" + view.query_string(
            flash=(flash + " · " if flash else "") + "No more waiting tasks here."))
    raise web.HTTPSeeOther(f"/tasks/{quote(task['task_id'], safe='')}?" + view.query_string(
        flash=request.query.get("flash", "")))


async def release_form(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    task = service.task(request.match_info["task_id"])
    service.release(task["task_id"], reviewer)
    raise web.HTTPSeeOther(f"/queue/{QUEUE_OF_TIER[task['tier']]}")


async def task_view(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    task = service.leased_task(request.match_info["task_id"], reviewer)
    view = qv.QueueQuery.from_query(request.query, service.settings.page_size)
    return _html(qv.task_page(service.view(task, reviewer), service.labels(task), service.contract(task), reviewer,
                              view, request.query.get("flash", "")))


async def submit_form(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    task_id = request.match_info["task_id"]
    form = await request.post()
    task = service.task(task_id)
    correction = await service.submit(task_id, reviewer, form.get("action"), form.get("corrected_label"),
                                      form.get("note") or None)
    flash = f"Answered {task['event_id']}: {correction['action']}" + (
        f" {correction['corrected_label']}" if correction["corrected_label"] else "")
    view = qv.QueueQuery.from_query(request.query, service.settings.page_size)
    queue = QUEUE_OF_TIER[task["tier"]]
    if form.get("then") == "list":
        raise web.HTTPSeeOther(f"/queue/{queue}?" + view.query_string(flash=flash))
    raise web.HTTPSeeOther(f"/queue/{queue}/next?" + view.query_string(flash=flash))


async def favicon(request: web.Request) -> web.Response:
    return web.Response(body=qv.FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


# ---------------------------------------------------------------- JSON API
async def api_queues(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    stats = service.queue_stats()
    return web.json_response({"queues": {q: stats[q] for q in service.queues_for(reviewer)}})


async def api_tasks(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    queue = request.query.get("tier", "analyst")
    try:
        limit = min(500, max(1, int(request.query.get("limit", service.settings.page_size))))
    except ValueError:
        raise ReviewError(400, "limit must be a whole number") from None
    return web.json_response({"tasks": service.waiting(reviewer, queue, limit)})


async def api_claim(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    task = service.claim(request.match_info["task_id"], reviewer)
    return web.json_response({"task": service.view(task, reviewer), "labels": service.labels(task)})


async def api_submit(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReviewError(400, "the body must be a JSON object like {\"action\": \"approve\"}") from None
    if not isinstance(body, dict):
        raise ReviewError(400, "the body must be a JSON object like {\"action\": \"approve\"}")
    correction = await service.submit(request.match_info["task_id"], reviewer, body.get("action"),
                                      body.get("corrected_label"), body.get("note"),
                                      source=body["source"] if body.get("source") in ("cli", "client") else "web")
    return web.json_response({"correction": correction})


async def api_next(request: web.Request) -> web.Response:
    """Lease the most urgent waiting task of ``?tier=`` (analyst | escalation); 204 when none waits."""
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    task = service.claim_next(reviewer, request.query.get("tier", "analyst"))
    if task is None:
        return web.Response(status=204)
    return web.json_response({"task": service.view(task, reviewer), "labels": service.labels(task),
                              "guidelines": service.contract(task).guidelines})


async def api_release(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    return web.json_response({"released": service.release(request.match_info["task_id"], reviewer)})


async def api_me(request: web.Request) -> web.Response:
    service, reviewer = request.app[SERVICE], request[REVIEWER]
    return web.json_response({"name": reviewer["name"], "role": reviewer["role"],
                              "counters": service.counters(reviewer)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[SERVICE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    """200 while the task feed runs (or was not started), 503 with the reason when it stopped."""
    feed = request.app.get(FEED)
    if feed is not None and (feed.error is not None or not feed.is_alive()):
        return web.json_response({"ok": False, "error": f"the task feed stopped: {feed.error}"}, status=503)
    return web.json_response({"ok": True})


# ---------------------------------------------------------------- wiring
def build_app(settings: ReviewSettings, store: ReviewStore | None = None, publisher=None,
              start_feed: bool = True) -> web.Application:
    """The aiohttp app. Without ``store``/``publisher`` they are built from ``settings``."""
    store = store or open_store(settings)
    if publisher is None:
        publisher = CorrectionPublisher(settings.bootstrap, settings.corrections_topic,
                                        security=settings.kafka_security)
    registry = CollectorRegistry()
    apply_conventions(registry)  # process_* / python_* collectors, no *_created series
    service = ReviewService(settings, store, publisher, ReviewMetrics(registry, store))
    app = web.Application(middlewares=[auth_and_errors], client_max_size=64 * 1024)
    app[SERVICE] = service
    sessions = SessionRegistry(settings.session_seconds, settings.session_idle_seconds, settings.max_sessions)
    app[SESSIONS] = sessions
    Gauge("loopline_review_sessions", "live review login sessions",
          registry=service.metrics.registry).set_function(lambda: len(sessions))
    app.add_routes([
        web.get("/login", login_form), web.post("/login", login), web.post("/logout", logout),
        web.get("/", index), web.get("/queue/{queue}", queue_view),
        web.post("/tasks/{task_id}/claim", claim_form), web.get("/tasks/{task_id}", task_view),
        web.post("/tasks/{task_id}/submit", submit_form),
        web.get("/api/queues", api_queues), web.get("/api/tasks", api_tasks),
        web.post("/api/tasks/{task_id}/claim", api_claim), web.post("/api/tasks/{task_id}/submit", api_submit),
        web.get("/metrics", metrics), web.get("/healthz", healthz),
        web.get("/queue/{queue}/next", next_form), web.post("/tasks/{task_id}/release", release_form),
        web.get("/favicon.ico", favicon), web.get("/api/next", api_next),
        web.post("/api/tasks/{task_id}/release", api_release), web.get("/api/me", api_me),
    ])
    async def start(app: web.Application) -> None:
        if start_feed:
            feed = TaskFeed(settings, store, on_bad_record=service.metrics.bad_records.inc)
            feed.start()
            app[FEED] = feed
            marks = PolicyMarks()
            service.policy_marks = marks
            policy_feed = PolicyMarksFeed(settings.bootstrap, settings.policy_events_topic, marks,
                                          security=settings.kafka_security)
            policy_feed.start()
            app[POLICY_FEED] = policy_feed

    async def stop(app: web.Application) -> None:
        feed = app.get(FEED)
        if feed is not None:
            await asyncio.get_running_loop().run_in_executor(None, feed.stop)
        policy_feed = app.get(POLICY_FEED)
        if policy_feed is not None:
            await asyncio.get_running_loop().run_in_executor(None, policy_feed.stop)
        if hasattr(publisher, "close"):
            publisher.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


class ReviewServer:
    """Runs :func:`build_app` on a background thread: ``with ReviewServer(settings) as srv: srv.url``."""

    def __init__(self, settings: ReviewSettings, **app_kwargs) -> None:
        self.settings = settings
        self.app = build_app(settings, **app_kwargs)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="review-server", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_cert_file else "http"
        return f"{scheme}://{self.settings.host}:{self.settings.port}"

    @property
    def service(self) -> ReviewService:
        return self.app[SERVICE]

    @property
    def feed(self) -> TaskFeed | None:
        return self.app.get(FEED)

    def start(self) -> ReviewServer:
        self._thread.start()

        async def go() -> None:
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.settings.host, self.settings.port,
                              ssl_context=server_ssl_context(self.settings)).start()

        asyncio.run_coroutine_threadsafe(go(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def server_ssl_context(settings: ReviewSettings) -> ssl.SSLContext | None:
    """The HTTPS context from ``tls_cert_file``/``tls_key_file`` (TLS 1.2+), or None for plain HTTP.

    Raises ``ReviewError`` (status 500, a startup error) when only one is set or the files do not load.
    """
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ReviewError(500, "LOOPLINE_REVIEW_TLS_CERT_FILE and LOOPLINE_REVIEW_TLS_KEY_FILE go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ReviewError(500, f"cannot load the review server's TLS certificate or key: {exc}") from None
    return ctx


def run_review_server(settings: ReviewSettings) -> None:
    """Foreground server until Ctrl-C / SIGTERM."""
    context = server_ssl_context(settings)
    scheme = "https" if context else "http"
    web.run_app(build_app(settings), host=settings.host, port=settings.port, access_log=None, ssl_context=context,
                print=lambda *_: print(f"review server on {scheme}://{settings.host}:{settings.port}", flush=True))
