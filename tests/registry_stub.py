"""A small stand-in for a Confluent schema registry's REST API, for tests.

No real schema registry installs on this machine (docker-compose keeps the real
one for production-like runs), so the tests talk to this: the endpoints
confluent-kafka's ``SchemaRegistryClient`` calls to register, look up and fetch
Avro schemas with references. Ids are global and deduplicated by
(schema text, references), versions are per subject. It does not check
compatibility (the real registry does); it records every request so tests can
see what a client asked for.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class RegistryStub:
    def __init__(self) -> None:
        self.schemas: dict[int, dict] = {}  # id -> {"schema", "references", "schemaType"}
        self.subjects: dict[str, list[int]] = {}  # subject -> ids by version (1-based)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def _reply(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                stub.requests.append(("GET", self.path))
                status, body = stub.get(urlparse(self.path).path)
                self._reply(status, body)

            def do_POST(self) -> None:  # noqa: N802
                stub.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                status, body = stub.post(urlparse(self.path).path, payload)
                self._reply(status, body)

            def do_PUT(self) -> None:  # noqa: N802
                self.do_POST()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RegistryStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- API
    def _version_body(self, subject: str, version: int) -> dict:
        sid = self.subjects[subject][version - 1]
        return {"subject": subject, "version": version, "id": sid, **self._schema_body(sid)}

    def _schema_body(self, sid: int) -> dict:
        s = self.schemas[sid]
        body = {"schema": s["schema"]}
        if s["references"]:
            body["references"] = s["references"]
        if s["schemaType"] != "AVRO":
            body["schemaType"] = s["schemaType"]
        return body

    def get(self, path: str):
        with self._lock:
            if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
                sid = int(m.group(1))
                if sid not in self.schemas:
                    return 404, {"error_code": 40403, "message": f"Schema {sid} not found"}
                return 200, self._schema_body(sid)
            if m := re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)", path):
                subject, v = unquote(m.group(1)), m.group(2)
                versions = self.subjects.get(subject)
                if not versions:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                version = len(versions) if v in ("latest", "-1") else int(v)
                if not 1 <= version <= len(versions):
                    return 404, {"error_code": 40402, "message": f"Version {v} not found."}
                return 200, self._version_body(subject, version)
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                return 200, list(range(1, len(self.subjects.get(unquote(m.group(1)), [])) + 1))
            if path == "/subjects":
                return 200, sorted(self.subjects)
            if re.fullmatch(r"/config(/[^/]+)?", path):
                return 200, {"compatibilityLevel": "BACKWARD"}
            return 404, {"error_code": 404, "message": f"no route {path}"}

    def post(self, path: str, payload: dict):
        with self._lock:
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                subject = unquote(m.group(1))
                key = {"schema": payload["schema"], "references": payload.get("references") or [],
                       "schemaType": payload.get("schemaType", "AVRO")}
                sid = next((i for i, s in self.schemas.items() if s == key), None)
                if sid is None:
                    sid = len(self.schemas) + 1
                    self.schemas[sid] = key
                versions = self.subjects.setdefault(subject, [])
                if sid not in versions:
                    versions.append(sid)
                return 200, {"id": sid, "subject": subject, "version": versions.index(sid) + 1, **self._schema_body(sid)}
            if m := re.fullmatch(r"/subjects/([^/]+)", path):  # lookup
                subject = unquote(m.group(1))
                for i, sid in enumerate(self.subjects.get(subject, []), 1):
                    s = self.schemas[sid]
                    if s["schema"] == payload["schema"] and s["references"] == (payload.get("references") or []):
                        return 200, self._version_body(subject, i)
                return 404, {"error_code": 40403, "message": "Schema not found"}
            if path.startswith("/config"):
                return 200, payload
            return 404, {"error_code": 404, "message": f"no route {path}"}
