"""A small S3-compatible object store on local disk, so the embedded broker keeps its data.

The pinned broker (Tansu 0.6.0) stores to memory or to S3 only, and relies on
S3's conditional writes (``If-None-Match: *`` to create, ``If-Match: <etag>``
to replace) to never overwrite a log segment or a watermark it did not read.
No S3 server that keeps data on disk *and* honours those headers installs from
the registries this project uses (``docs/reliability.md``), so this module is
one: the subset of the S3 REST API the broker's client (Rust ``object_store``)
uses, path-style, on a directory:

* ``PUT /bucket`` (create), ``PUT /bucket/key`` with the preconditions above
  (``412 Precondition Failed`` when they do not hold; checked and written under
  one lock, the file replaced atomically and fsynced), ``x-amz-copy-source``;
* ``GET`` / ``HEAD`` of an object (``ETag``, ``Last-Modified``, ``Range``);
* ``DELETE`` of an object;
* ``GET /bucket?list-type=2`` (prefix, delimiter, start-after, continuation token);
* multipart uploads (initiate, upload part, complete, abort).

Requests are not authenticated (it binds to 127.0.0.1 only); the broker signs
them with any credentials. Object keys map to files under ``root/bucket/``; a
key with ``..`` or a leading ``/`` is refused.

    python -m loopline.connectors.objectstore --root DIR --port N
"""
from __future__ import annotations

import argparse
import email.utils
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_KEYS = 1000


class ObjectStore:
    """Objects as files under ``root``: ``root/<bucket>/<key>``; multipart parts under ``root/.uploads``."""

    #: ETags remembered (path -> (mtime_ns, size, etag)), so a listing or a GET does not hash every object again
    ETAG_CACHE = 100_000

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads = self.root / ".uploads"
        self.lock = threading.Lock()  # a precondition check and its write are one step
        self._etags: OrderedDict[Path, tuple[int, int, str]] = OrderedDict()
        self._etag_lock = threading.Lock()

    def path(self, bucket: str, key: str = "") -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise ValueError(f"invalid bucket name {bucket!r}")
        parts = key.split("/") if key else []
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(bucket, *parts)

    @staticmethod
    def etag_of(data: bytes) -> str:
        return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'

    def etag(self, path: Path, fresh: bool = False) -> str | None:
        """The object's ETag (None when it does not exist).

        Listings use a remembered tag while the file's (mtime, size) match; ``fresh`` (a
        precondition check) always hashes the bytes, as a same-size rewrite within the file
        system's timestamp granularity keeps (mtime, size).
        """
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                return None
            if not fresh:
                with self._etag_lock:
                    hit = self._etags.get(path)
                if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
                    return hit[2]
            tag = self.etag_of(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        self._remember(path, st, tag)
        return tag

    def _remember(self, path: Path, st: os.stat_result, tag: str) -> None:
        with self._etag_lock:
            self._etags[path] = (st.st_mtime_ns, st.st_size, tag)
            self._etags.move_to_end(path)
            while len(self._etags) > self.ETAG_CACHE:
                self._etags.popitem(last=False)

    def write(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        tag = self.etag_of(data)
        self._remember(path, path.stat(), tag)
        return tag

    def list(self, bucket: str, prefix: str, delimiter: str, after: str, max_keys: int):
        """(objects [(key, size, mtime, etag)], common prefixes, next key or None), keys in byte order."""
        base = self.path(bucket)
        keys = []
        start = base  # walk only below the folder the prefix names in full
        if "/" in prefix:
            folder = prefix.rsplit("/", 1)[0]
            try:
                start = self.path(bucket, folder)
            except ValueError:
                start = base
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(base)
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = name if str(rel) == "." else f"{rel.as_posix()}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort(key=lambda k: k.encode())
        objects: list[tuple[str, int, float, str | None]] = []
        prefixes: list[str] = []
        seen: set[str] = set()
        for key in keys:
            if after and key.encode() <= after.encode():
                continue
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[:cut + len(delimiter)]
                    if common not in seen:
                        if len(objects) + len(prefixes) >= max_keys:
                            return objects, prefixes, key
                        seen.add(common)
                        prefixes.append(common)
                    continue
            if len(objects) + len(prefixes) >= max_keys:
                return objects, prefixes, key
            p = base / key
            st = p.stat()
            objects.append((key, st.st_size, st.st_mtime, self.etag(p)))
        return objects, prefixes, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopline-objectstore"
    # headers and body go out as separate writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK (~40 ms per request on Linux) — reads of the broker were 2,400 records/s
    disable_nagle_algorithm = True
    store: ObjectStore

    def log_message(self, fmt, *args) -> None:  # noqa: ANN001 - quiet: the broker logs its own errors
        pass

    # ------------------------------------------------------------------ plumbing
    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        path = unquote(url.path)
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _body(self) -> bytes:
        self._consumed = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message></Error>").encode()
        self._send(status, body, {"Content-Type": "application/xml"}, head=head)

    def _xml(self, body: str) -> None:
        self._send(200, ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode(),
                   {"Content-Type": "application/xml"})

    def _guard(self, fn) -> None:  # noqa: ANN001
        """Run one request; a bad key or bucket is a 400 (the body read first, so the connection stays usable)."""
        self._consumed = False
        try:
            fn()
        except ValueError as exc:
            if not self._consumed and self.command in ("PUT", "POST"):
                self._body()
            self._error(400, "InvalidArgument", str(exc))

    # ------------------------------------------------------------------ verbs
    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        self._guard(self._put)

    def do_GET(self) -> None:  # noqa: N802
        self._guard(lambda: self._get(head=False))

    def do_HEAD(self) -> None:  # noqa: N802
        self._guard(lambda: self._get(head=True))

    def do_DELETE(self) -> None:  # noqa: N802
        self._guard(self._delete)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def _put(self) -> None:
        bucket, key, q = self._target()
        store = self.store
        data = self._body()
        if not key:
            store.path(bucket).mkdir(parents=True, exist_ok=True)
            self._send(200)
            return
        if "uploadId" in q:  # one part of a multipart upload
            part = store.uploads / q["uploadId"][0] / f"{int(q['partNumber'][0]):05d}"
            if not part.parent.is_dir():
                self._error(404, "NoSuchUpload", "no such upload")
                return
            self._send(200, headers={"ETag": store.write(part, data)})
            return
        source = self.headers.get("x-amz-copy-source")
        if source:
            src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
            try:
                data = store.path(src_bucket, src_key).read_bytes()
            except FileNotFoundError:
                self._error(404, "NoSuchKey", f"{source} does not exist")
                return
        path = store.path(bucket, key)
        if not store.path(bucket).is_dir():
            self._error(404, "NoSuchBucket", f"bucket {bucket} does not exist")
            return
        with store.lock:
            current = store.etag(path, fresh=True)
            if self.headers.get("If-None-Match", "").strip() == "*" and current is not None:
                self._error(412, "PreconditionFailed", f"{key} exists")
                return
            want = self.headers.get("If-Match")
            if want is not None and (current is None or want.strip() not in (current, current.strip('"'), "*")):
                status = 404 if current is None else 412
                self._error(status, "NoSuchKey" if current is None else "PreconditionFailed",
                            f"{key} is not at {want}")
                return
            etag = store.write(path, data)
        if source:
            self._xml(f'<CopyObjectResult xmlns="{_XMLNS}"><ETag>{escape(etag)}</ETag></CopyObjectResult>')
        else:
            self._send(200, headers={"ETag": etag})

    def _get(self, head: bool) -> None:
        bucket, key, q = self._target()
        if not key:
            if not self.store.path(bucket).is_dir():
                self._error(404, "NoSuchBucket", f"bucket {bucket} does not exist", head=head)
            elif head:
                self._send(200, head=True)
            else:
                self._list(bucket, q)
            return
        path = self.store.path(bucket, key)
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._error(404, "NoSuchKey", f"{key} does not exist", head=head)
            return
        # the tag of exactly these bytes: a remembered one could belong to a same-size rewrite within the
        # file system's timestamp granularity, and the broker sends it back in If-Match
        headers = {"ETag": ObjectStore.etag_of(data), "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            size = len(data)
            if first == "":
                start, end = max(size - int(last), 0), size - 1
            else:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            if start >= size or start > end:
                self._error(416, "InvalidRange", f"{rng} outside {size} bytes", head=head)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._send(206, data[start:end + 1], headers, head=head)
            return
        self._send(200, data, headers, head=head)

    def _list(self, bucket: str, q: dict[str, list[str]]) -> None:
        arg = {k: v[0] for k, v in q.items()}
        prefix, delimiter = arg.get("prefix", ""), arg.get("delimiter", "")
        after = arg.get("continuation-token") or arg.get("start-after", "")
        max_keys = min(int(arg.get("max-keys") or _MAX_KEYS), _MAX_KEYS)
        objects, prefixes, more = self.store.list(bucket, prefix, delimiter, after, max_keys)
        last = objects[-1][0] if objects else (prefixes[-1] if prefixes else "")
        parts = [f'<ListBucketResult xmlns="{_XMLNS}"><Name>{escape(bucket)}</Name>',
                 f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(objects) + len(prefixes)}</KeyCount>",
                 f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{'true' if more else 'false'}</IsTruncated>"]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        if more:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
        for key, size, mtime, etag in objects:
            iso = _iso(mtime)
            parts.append(f"<Contents><Key>{escape(key)}</Key><LastModified>{iso}</LastModified>"
                         f"<ETag>{escape(etag or '')}</ETag><Size>{size}</Size>"
                         f"<StorageClass>STANDARD</StorageClass></Contents>")
        for p in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        self._xml("".join(parts))

    def _delete(self) -> None:
        bucket, key, q = self._target()
        if "uploadId" in q:
            shutil.rmtree(self.store.uploads / q["uploadId"][0], ignore_errors=True)
            self._send(204)
            return
        if key:
            with self.store.lock:
                self.store.path(bucket, key).unlink(missing_ok=True)
        self._send(204)

    def _post(self) -> None:
        bucket, key, q = self._target()
        self._body()  # the part list of a completion: every uploaded part is used
        if "uploads" in q:
            upload = uuid.uuid4().hex
            (self.store.uploads / upload).mkdir(parents=True)
            self._xml(f'<InitiateMultipartUploadResult xmlns="{_XMLNS}"><Bucket>{escape(bucket)}</Bucket>'
                      f"<Key>{escape(key)}</Key><UploadId>{upload}</UploadId></InitiateMultipartUploadResult>")
            return
        if "uploadId" in q:
            folder = self.store.uploads / q["uploadId"][0]
            if not folder.is_dir():
                self._error(404, "NoSuchUpload", "no such upload")
                return
            data = b"".join(p.read_bytes() for p in sorted(folder.iterdir()))  # the body lists the parts: all of them
            with self.store.lock:
                etag = self.store.write(self.store.path(bucket, key), data)
            shutil.rmtree(folder, ignore_errors=True)
            self._xml(f'<CompleteMultipartUploadResult xmlns="{_XMLNS}"><Bucket>{escape(bucket)}</Bucket>'
                      f"<Key>{escape(key)}</Key><ETag>{escape(etag)}</ETag></CompleteMultipartUploadResult>")
            return
        self._error(400, "InvalidRequest", "unsupported POST")


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def serve(root: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A started server (in a daemon thread) storing under ``root``; ``server.server_address`` has the port."""
    handler = type("BoundHandler", (Handler,), {"store": ObjectStore(root)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="objectstore", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="S3-compatible object store on local disk (for the embedded broker)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bucket", default="tansu")
    args = p.parse_args(argv)
    store = ObjectStore(args.root)
    store.path(args.bucket).mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"store": store})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(f"object store on http://{args.host}:{args.port}, data in {args.root}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

