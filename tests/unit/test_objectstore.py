"""The embedded broker's local object store: the S3 subset Tansu uses, with conditional writes that hold
(the one thing the installable fake S3 servers got wrong: docs/reliability.md)."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from loopline.connectors.objectstore import serve


@pytest.fixture()
def s3(tmp_path):
    server = serve(tmp_path)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    call(base, "PUT", "/tansu")
    yield base
    server.shutdown()


def call(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_create_only_if_absent_and_replace_only_the_version_read(s3):
    status, h, _ = call(s3, "PUT", "/tansu/clusters/c1/watermark.json", b'{"high": 1}', {"If-None-Match": "*"})
    assert status == 200 and h["ETag"].startswith('"')
    first = h["ETag"]
    status, _, body = call(s3, "PUT", "/tansu/clusters/c1/watermark.json", b'{"high": 0}', {"If-None-Match": "*"})
    assert status == 412 and b"PreconditionFailed" in body  # an existing object is never overwritten by a create
    status, h, _ = call(s3, "PUT", "/tansu/clusters/c1/watermark.json", b'{"high": 2}', {"If-Match": first})
    assert status == 200 and h["ETag"] != first
    status, _, _ = call(s3, "PUT", "/tansu/clusters/c1/watermark.json", b'{"high": 9}', {"If-Match": first})
    assert status == 412  # someone else's version in between: refused
    status, h, body = call(s3, "GET", "/tansu/clusters/c1/watermark.json")
    assert status == 200 and body == b'{"high": 2}' and "Last-Modified" in h
    status, _, _ = call(s3, "PUT", "/tansu/clusters/c1/missing.json", b"x", {"If-Match": first})
    assert status == 404


def test_get_range_head_delete_and_a_missing_key(s3):
    call(s3, "PUT", "/tansu/t/0/00000000000000000000.batch", bytes(range(100)))
    status, h, body = call(s3, "GET", "/tansu/t/0/00000000000000000000.batch", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == bytes(range(10, 20)) and h["Content-Range"] == "bytes 10-19/100"
    status, h, body = call(s3, "HEAD", "/tansu/t/0/00000000000000000000.batch")
    assert status == 200 and h["Content-Length"] == "100" and body == b""
    assert call(s3, "DELETE", "/tansu/t/0/00000000000000000000.batch")[0] == 204
    status, _, body = call(s3, "GET", "/tansu/t/0/00000000000000000000.batch")
    assert status == 404 and b"NoSuchKey" in body


def test_list_with_prefix_delimiter_and_pages(s3):
    for key in ("a/1", "a/2", "a/b/3", "c/4", "a/0"):
        call(s3, "PUT", f"/tansu/{key}", b"x")
    _, _, body = call(s3, "GET", "/tansu?list-type=2&prefix=a/&delimiter=/")
    text = body.decode()
    assert [k.split("</Key>")[0] for k in text.split("<Key>")[1:]] == ["a/0", "a/1", "a/2"]
    assert "<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes>" in text
    _, _, body = call(s3, "GET", "/tansu?list-type=2&max-keys=2")
    text = body.decode()
    assert "<IsTruncated>true</IsTruncated>" in text and text.count("<Key>") == 2
    token = text.split("<NextContinuationToken>")[1].split("<")[0]
    _, _, body = call(s3, "GET", f"/tansu?list-type=2&continuation-token={token}")
    assert [k.split("</Key>")[0] for k in body.decode().split("<Key>")[1:]] == ["a/2", "a/b/3", "c/4"]


def test_multipart_upload_and_keys_that_leave_the_folder(s3):
    _, _, body = call(s3, "POST", "/tansu/big/object?uploads")
    upload = body.decode().split("<UploadId>")[1].split("<")[0]
    call(s3, "PUT", f"/tansu/big/object?partNumber=2&uploadId={upload}", b"world")
    call(s3, "PUT", f"/tansu/big/object?partNumber=1&uploadId={upload}", b"hello ")
    assert call(s3, "POST", f"/tansu/big/object?uploadId={upload}", b"<CompleteMultipartUpload/>")[0] == 200
    assert call(s3, "GET", "/tansu/big/object")[2] == b"hello world"
    status, _, body = call(s3, "PUT", "/tansu/../escape", b"x")
    assert status == 400 and b"invalid object key" in body
