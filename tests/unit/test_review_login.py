"""Hardened review login (issue #24): throttling, server-side sessions, metrics, HTTPS.

The real review app (aiohttp, real store in SQLite, real scrypt passwords) is served on the
loopback interface by aiohttp's test server; no Kafka is involved (the task feed is not
started and the correction publisher is a list, as no answer is submitted here). Locks
last a second so waiting one out takes a second, not fifteen minutes.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import time
import urllib.error
import urllib.request

import pytest
from aiohttp.test_utils import TestClient, TestServer

from loopline.connectors.review.app import COOKIE, ReviewServer, build_app
from loopline.connectors.review.service import add_reviewer
from loopline.connectors.review.sessions import SessionRegistry
from loopline.connectors.review.settings import ReviewSettings
from loopline.connectors.review.store import ReviewStore
from loopline.connectors.review.throttle import LoginThrottle

PASSWORD = "correct horse battery"


class _Publisher:
    def __init__(self) -> None:
        self.published: list[dict] = []

    def publish(self, correction: dict) -> None:
        self.published.append(correction)


def _app(tmp_path, **kw):
    settings = ReviewSettings(db_path=tmp_path / "review.sqlite3", **kw)
    store = ReviewStore(settings.db_path, settings.lease_seconds, settings.task_ttl_seconds, settings.max_tasks)
    add_reviewer(store, "ana", "analyst", False, PASSWORD)
    add_reviewer(store, "pia", "senior", True, PASSWORD)
    return build_app(settings, store=store, publisher=_Publisher(), start_feed=False)


def _run(app, scenario):
    async def go():
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)
    return asyncio.run(go())


async def _form_login(client, name: str, password: str, headers: dict | None = None):
    return await client.post("/login", data={"name": name, "password": password}, allow_redirects=False,
                             headers=headers or {})


def test_twenty_wrong_passwords_get_429_before_the_21st_and_a_right_one_waits_out_the_window(tmp_path):
    app = _app(tmp_path, login_max_failures=10, login_window_seconds=60.0, login_lockout_seconds=1.0,
               login_max_failures_per_address=100)

    async def scenario(client):
        statuses, retry = [], []
        for _ in range(20):
            r = await _form_login(client, "ana", "wrong password")
            statuses.append(r.status)
            retry.append(r.headers.get("Retry-After"))
        started = time.monotonic()
        early = await _form_login(client, "ana", PASSWORD)  # the right password, but the lock holds
        early_retry = int(early.headers["Retry-After"])
        waited = []
        while True:  # wait out the window as a client honouring Retry-After would
            await asyncio.sleep(0.2)
            r = await _form_login(client, "ana", PASSWORD)
            waited.append(r.status)
            if r.status != 429 or time.monotonic() - started > 5:
                break
        elapsed = time.monotonic() - started
        cookie = r.cookies.get(COOKIE)
        queues = await client.get("/api/queues", cookies={COOKIE: cookie.value}) if cookie else None
        metrics = await (await client.get("/metrics")).text()
        return statuses, retry, early, early_retry, waited, elapsed, r, queues, metrics

    statuses, retry, early, early_retry, waited, elapsed, final, queues, metrics = _run(app, scenario)
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429] * 10  # 429 well before the 21st try
    assert all(r is None for r in retry[:10]) and all(int(r) >= 1 for r in retry[10:])
    assert early.status == 429 and early_retry == 1
    assert final.status == 303 and final.headers["Location"] == "/"
    assert 0.2 < elapsed < 5 and waited[-1] == 303 and set(waited[:-1]) <= {429}
    assert queues is not None and queues.status == 200
    assert 'loopline_review_logins_total{method="form",outcome="failure"} 10.0' in metrics
    assert 'loopline_review_logins_total{method="form",outcome="throttled"} ' in metrics
    assert 'loopline_review_logins_total{method="form",outcome="success"} 1.0' in metrics
    assert 'loopline_review_lockouts_total{scope="account"} 1.0' in metrics
    assert "\"ana\"" not in metrics and "wrong password" not in metrics  # no user names in labels


def test_api_basic_auth_is_throttled_too_and_per_address_limits_many_accounts(tmp_path):
    app = _app(tmp_path, login_max_failures=3, login_max_failures_per_address=5, login_window_seconds=60.0,
               trust_forwarded_for=True)

    def basic(name, password, address):
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}", "X-Forwarded-For": f"10.9.9.9, {address}"}

    async def scenario(client):
        out = []
        for i in range(5):  # five different accounts from one address: the address locks
            out.append((await client.get("/api/queues", headers=basic(f"guess{i}", "x", "10.0.0.1"))).status)
        locked = await client.get("/api/queues", headers=basic("pia", PASSWORD, "10.0.0.1"))
        other = await client.get("/api/queues", headers=basic("pia", PASSWORD, "10.0.0.2"))
        for _ in range(3):  # ana's account from a third address: the account locks
            out.append((await client.get("/api/queues", headers=basic("ana", "x", "10.0.0.3"))).status)
        ana_elsewhere = await client.get("/api/queues", headers=basic("ana", PASSWORD, "10.0.0.4"))
        return out, locked, await locked.json(), other, ana_elsewhere, await (await client.get("/metrics")).text()

    out, locked, body, other, ana_elsewhere, metrics = _run(app, scenario)
    assert out == [401] * 8
    assert locked.status == 429 and "Too many failed logins" in body["error"] and int(locked.headers["Retry-After"]) > 50
    assert other.status == 200  # another address is not affected
    assert ana_elsewhere.status == 429  # the account lock follows the account
    assert 'loopline_review_lockouts_total{scope="address"} 1.0' in metrics
    assert 'loopline_review_lockouts_total{scope="account"} 1.0' in metrics
    assert "10.0.0" not in metrics


def test_logout_and_expiry_end_the_session_on_the_server(tmp_path):
    app = _app(tmp_path, session_seconds=60.0, session_idle_seconds=1.0)

    async def scenario(client):
        r = await _form_login(client, "ana", PASSWORD)
        sid = r.cookies[COOKIE].value
        ok = await client.get("/api/queues", cookies={COOKIE: sid})
        out = await client.post("/logout", cookies={COOKIE: sid}, allow_redirects=False)
        replayed = await client.get("/api/queues", cookies={COOKIE: sid})  # a copy of the old cookie
        r = await _form_login(client, "ana", PASSWORD)
        idle_sid = r.cookies[COOKIE].value
        await asyncio.sleep(1.2)
        idle = await client.get("/api/queues", cookies={COOKIE: idle_sid})
        gauge = await (await client.get("/metrics")).text()
        return r, ok, out, replayed, idle, gauge

    r, ok, out, replayed, idle, gauge = _run(app, scenario)
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    assert ok.status == 200 and out.status == 303
    assert replayed.status == 401  # invalidated server-side, not only deleted in the browser
    assert idle.status == 401
    assert "loopline_review_sessions 0.0" in gauge


def test_forged_or_unknown_session_ids_are_refused(tmp_path):
    app = _app(tmp_path)

    async def scenario(client):
        return [(await client.get("/api/queues", cookies={COOKIE: c})).status
                for c in ("forged", "ana|9999999999|mac", "x" * 43)]

    assert _run(app, scenario) == [401, 401, 401]


def test_throttle_and_session_tables_stay_bounded():
    t = LoginThrottle(max_failures=3, window_seconds=10, max_keys=100)
    for i in range(5000):
        t.failed(f"name-{i}", now=float(i) / 1000)
    assert len(t) == 100
    t.failed("late", now=1000.0)  # everything else expired
    assert len(t) == 1
    reg = SessionRegistry(max_age_seconds=100, idle_seconds=50, max_sessions=50)
    sids = [reg.start(f"r{i}", now=0) for i in range(500)]
    assert len(reg) == 50 and reg.lookup(sids[0], now=1) is None and reg.lookup(sids[-1], now=1) == "r499"
    assert reg.sweep(now=200) == 50 and len(reg) == 0


# ------------------------------------------------------------------ HTTPS
@pytest.fixture(scope="module")
def server_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("review-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_review_server_over_https_sets_a_secure_cookie(tmp_path, server_cert):
    from loopline.connectors.broker import free_port

    cert_file, key_file = server_cert
    settings = ReviewSettings(db_path=tmp_path / "r.sqlite3", host="127.0.0.1", port=free_port(),
                              tls_cert_file=cert_file, tls_key_file=key_file)
    store = ReviewStore(settings.db_path, settings.lease_seconds, settings.task_ttl_seconds, settings.max_tasks)
    add_reviewer(store, "ana", "analyst", False, PASSWORD)
    trust = ssl.create_default_context(cafile=str(cert_file))
    with ReviewServer(settings, store=store, publisher=_Publisher(), start_feed=False) as srv:
        assert srv.url.startswith("https://")
        with urllib.request.urlopen(srv.url + "/healthz", context=trust, timeout=5) as r:
            assert r.status == 200
        req = urllib.request.Request(srv.url + "/login", data=f"name=ana&password={PASSWORD}".encode(),
                                     method="POST")
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=trust),
                                             _NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(req, timeout=10)
        assert redirect.value.code == 303 and "Secure" in redirect.value.headers["Set-Cookie"]
        with pytest.raises(OSError):  # plain HTTP is not served (connection reset or closed)
            urllib.request.urlopen(srv.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_half_a_tls_setting_is_refused(tmp_path, server_cert):
    from loopline.connectors.review.app import server_ssl_context
    from loopline.connectors.review.service import ReviewError

    with pytest.raises(ReviewError, match="go together"):
        server_ssl_context(ReviewSettings(tls_cert_file=server_cert[0]))
    with pytest.raises(ReviewError, match="cannot load"):
        server_ssl_context(ReviewSettings(tls_cert_file=server_cert[0], tls_key_file=tmp_path / "missing.pem"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
