"""Read and write files that live on local disk, in Google Cloud Storage or behind an HTTP(S) URL.

Remote inputs are downloaded once into a cache and reused: ``gs://`` objects are keyed by their generation
(a rewritten object is fetched again), HTTP(S) files by URL plus the server's validators (ETag,
Last-Modified, Content-Length). Downloads are atomic (temp file + rename), transient errors are retried
with exponential backoff, and every failure reaches the user as one :class:`InputError` line.

A GCS client is created on first use (one per ``STORAGE_EMULATOR_HOST`` value): with the variable set it
uses anonymous credentials (tests run against ``gcp-storage-emulator``), otherwise Application Default
Credentials.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from crownsam.common.atomic import atomic_path
from crownsam.common.errors import InputError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Client

T = TypeVar("T")

RETRY_TOTAL_S = 5.0  # total backoff sleep allowed for transient errors (read at call time: tests shrink it)
RETRY_FIRST_S = 0.25  # first backoff delay; doubles after each attempt
TIMEOUT_S = (10.0, 120.0)  # (connect, read) seconds for one request
CHUNK = 1 << 20
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


class _Truncated(OSError):
    """The server closed the connection before sending the whole body."""


def remote_errors() -> tuple[type[BaseException], ...]:
    """What reaching a bucket or a server can raise: connection and HTTP errors (OSError covers refused,
    reset, timeouts and unresolvable hosts), truncated bodies, Google API and credential errors, a missing
    object (:class:`_Missing`), and ValueError for malformed URIs. Anything else is a programming error."""
    import requests
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (OSError, ValueError, LookupError, http.client.HTTPException, requests.RequestException,
            GoogleAPIError, GoogleAuthError)  # fmt: skip


class _Missing(LookupError):
    """No such bucket or object (the message is the short reason)."""


def is_remote(uri: str) -> bool:
    """True for ``gs://``, ``http://`` and ``https://`` URIs."""
    return str(uri).lower().startswith(("gs://", "http://", "https://"))


def default_cache_dir() -> Path:
    """``$CROWNSAM_CACHE`` if set, else ``~/.cache/crownsam``."""
    env = os.environ.get("CROWNSAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crownsam"


def fetch(
    uri: str,
    cache_dir: str | Path | None = None,
    *,
    what: str = "file",
    retry_s: float | None = None,
    must_exist: bool = True,
) -> Path:
    """Return a local path holding the content of ``uri``, downloading remote files into the cache.

    Local paths and ``file://`` URIs are returned as they are (they must exist, unless ``must_exist`` is
    False: then the reader that opens them says what is wrong). ``retry_s`` overrides
    :data:`RETRY_TOTAL_S`, the backoff budget for transient errors (connection reset, 408/429/5xx).
    """
    uri = str(uri)
    scheme = _scheme(uri)
    if scheme not in ("gs", "http", "https"):
        path = _local_path(uri)
        if must_exist and not path.exists():
            raise InputError(uri, f"{what} not found")
        return path
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    budget = RETRY_TOTAL_S if retry_s is None else retry_s
    try:
        if scheme == "gs":
            return _fetch_gs(uri, cache, budget)
        return _fetch_http(uri, cache, budget)
    except remote_errors() as exc:
        raise InputError(uri, f"cannot fetch {what}: {_reason(exc)}") from exc


def upload(local: str | Path, uri: str) -> str:
    """Copy the local file ``local`` to ``uri`` (``gs://...``, a local path or ``file://``); return ``uri``.

    Local copies are atomic; GCS objects appear whole by design.
    """
    src = _local_path(str(local))
    if not src.is_file():
        raise InputError(local, "file to upload not found")
    scheme = _scheme(uri)
    if scheme in ("http", "https"):
        raise InputError(uri, "cannot upload to an HTTP(S) URL; use gs:// or a local path")
    try:
        if scheme == "gs":
            bucket, key = _split_gs(uri)
            blob = _gcs_client().bucket(bucket).blob(key)

            def send() -> None:
                blob.upload_from_filename(str(src), retry=None, timeout=TIMEOUT_S)

            _retrying(send, RETRY_TOTAL_S)
        else:
            with atomic_path(_local_path(uri)) as tmp:
                shutil.copyfile(src, tmp)
    except remote_errors() as exc:
        raise InputError(uri, f"cannot upload {local}: {_reason(exc)}") from exc
    return uri


def fingerprint(uri: str) -> str:
    """A string that changes when the content of ``uri`` changes.

    ``gs://`` -> ``gs-generation:<gen>[,md5:<hex>][,crc32c:<hex>]`` (metadata only, no download);
    local path -> ``sha256:<hex>`` of the bytes; HTTP(S) -> ``sha256:<hex>`` of the fetched copy.
    """
    uri = str(uri)
    if _scheme(uri) != "gs":
        path = fetch(uri)
        if path.is_dir():
            raise InputError(uri, "is a folder, not a file")
        return _sha256(path)
    try:
        blob = _gs_blob(uri, RETRY_TOTAL_S)
    except remote_errors() as exc:
        raise InputError(uri, f"cannot fingerprint: {_reason(exc)}") from exc
    return _gs_fingerprint(blob.generation, blob.md5_hash, blob.crc32c)


def exists(uri: str) -> bool:
    """True if ``uri`` names an existing local file/folder, GCS object or HTTP(S) resource.

    A missing bucket counts as missing; an unreachable server raises :class:`InputError`.
    """
    uri = str(uri)
    scheme = _scheme(uri)
    try:
        if scheme == "gs":
            bucket, key = _split_gs(uri)
            blob = _gcs_client().bucket(bucket).blob(key)
            return _retrying(lambda: blob.exists(retry=None, timeout=TIMEOUT_S), RETRY_TOTAL_S)
        if scheme in ("http", "https"):
            return _retrying(lambda: _http_exists(uri), RETRY_TOTAL_S)
    except remote_errors() as exc:
        raise InputError(uri, f"cannot check existence: {_reason(exc)}") from exc
    return _local_path(uri).exists()


# ---------------------------------------------------------------------------------------------- paths


def _scheme(uri: str) -> str:
    """Lower-case URI scheme, or '' for a plain path (a Windows drive letter is not a scheme)."""
    scheme = urllib.parse.urlsplit(str(uri)).scheme.lower()
    return scheme if len(scheme) > 1 else ""


def _local_path(uri: str) -> Path:
    """A plain path or ``file://`` URI as a :class:`Path`."""
    if _scheme(uri) == "file":
        parts = urllib.parse.urlsplit(uri)
        return Path(urllib.request.url2pathname(parts.path))
    return Path(uri).expanduser()


def _split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/key`` -> ``(bucket, key)``, the key taken verbatim (``#`` and ``?`` included)."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket or not key:
        raise ValueError("not a gs://BUCKET/OBJECT URI")
    return bucket, key


def _digest(text: str, n: int = 20) -> str:
    """Short hex digest of ``text``, safe as a folder name."""
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _cache_name(name: str) -> str:
    """The last path component of a key or URL path, usable as a file name (keeps the suffix)."""
    base = PurePosixPath(urllib.parse.unquote(name)).name
    return base if base not in ("", ".", "..") else "download"


def _gs_cache_path(cache: Path, bucket: str, key: str, generation: int) -> Path:
    """``CACHE/gs/<hash of bucket+key>/<generation>/<basename>``."""
    return cache / "gs" / _digest(f"{bucket}/{key}") / str(generation) / _cache_name(key)


def _http_cache_path(cache: Path, url: str, validators: str) -> Path:
    """``CACHE/http/<hash of URL>/<hash of validators>/<basename>``."""
    name = _cache_name(urllib.parse.urlsplit(url).path)
    return cache / "http" / _digest(url) / _digest(validators, 12) / name


# ---------------------------------------------------------------------------------------------- GCS


def _gcs_client() -> Client:
    """The client for the current environment (``STORAGE_EMULATOR_HOST`` or none), created on first use."""
    return _client_for(os.environ.get("STORAGE_EMULATOR_HOST") or None)


@functools.lru_cache(maxsize=4)
def _client_for(emulator_host: str | None) -> Client:
    """Anonymous credentials against an emulator, Application Default Credentials otherwise."""
    from google.cloud import storage

    if emulator_host:
        return storage.Client.create_anonymous_client()
    return storage.Client()


def _gs_blob(uri: str, budget: float) -> Blob:
    """The object's metadata; raises :class:`_Missing` naming a missing bucket or object."""
    bucket_name, key = _split_gs(uri)
    bucket = _gcs_client().bucket(bucket_name)
    blob = _retrying(lambda: bucket.get_blob(key, retry=None, timeout=TIMEOUT_S), budget)
    if blob is None:
        if not _retrying(lambda: bucket.exists(retry=None, timeout=TIMEOUT_S), budget):
            raise _Missing(f"no such bucket gs://{bucket_name}")
        raise _Missing("no such object")
    return blob


def _fetch_gs(uri: str, cache: Path, budget: float) -> Path:
    """Download a GCS object into the cache, keyed by generation; reuse an existing copy."""
    blob = _gs_blob(uri, budget)
    bucket, key = _split_gs(uri)
    target = _gs_cache_path(cache, bucket, key, blob.generation)
    if target.is_file() and (blob.size is None or target.stat().st_size == blob.size):
        return target
    # A fresh handle pinned to the generation: the media URL is built (and encoded) by the client.
    pinned = blob.bucket.blob(key, generation=blob.generation)

    def download() -> None:
        with atomic_path(target) as tmp:
            pinned.download_to_filename(str(tmp), retry=None, timeout=TIMEOUT_S)

    _retrying(download, budget)
    return target


def _gs_fingerprint(generation: int | None, md5_b64: str | None, crc32c_b64: str | None) -> str:
    """``gs-generation:<gen>`` plus ``,md5:<hex>`` and ``,crc32c:<hex>`` when the server reports them."""
    parts = [f"gs-generation:{generation}"]
    hashes = (("md5", md5_b64), ("crc32c", crc32c_b64))
    parts += [f"{name}:{base64.b64decode(value).hex()}" for name, value in hashes if value]
    return ",".join(parts)


# ---------------------------------------------------------------------------------------------- HTTP


def _validators(headers: http.client.HTTPMessage) -> str:
    """The response headers that identify a version of the resource, as one cache key string."""
    return "|".join(f"{h}={headers.get(h, '')}" for h in ("ETag", "Last-Modified", "Content-Length"))


def _fetch_http(url: str, cache: Path, budget: float) -> Path:
    """Download an HTTP(S) resource into the cache keyed by URL and validators; reuse an existing copy.

    With no validators at all, any cached copy of the URL is reused without contacting the server.
    """
    unversioned = _http_cache_path(cache, url, _validators(http.client.HTTPMessage()))
    if unversioned.is_file():
        return unversioned
    return _retrying(lambda: _http_download(url, cache), budget)


def _http_download(url: str, cache: Path) -> Path:
    """One GET: stop after the headers if the cache already holds this version, else stream it in."""
    request = urllib.request.Request(url, headers={"User-Agent": "crownsam"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S[1]) as response:
        target = _http_cache_path(cache, url, _validators(response.headers))
        if target.is_file():
            return target
        expected = response.headers.get("Content-Length")
        with atomic_path(target) as tmp:
            with tmp.open("wb") as out:
                got = _copy(response, out)
            if expected is not None and got != int(expected):
                raise _Truncated(f"connection closed after {got} of {expected} bytes")
    return target


def _copy(response: http.client.HTTPResponse, out: BinaryIO) -> int:
    """Stream the body into ``out`` in chunks; return the byte count (``read(n)`` never flags truncation)."""
    total = 0
    while chunk := response.read(CHUNK):
        out.write(chunk)
        total += len(chunk)
    return total


def _http_exists(url: str) -> bool:
    """HEAD ``url``: True for 2xx, False for 404/410; other statuses raise."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "crownsam"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S[1]):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return False
        raise


# ---------------------------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: ``__cause__``/``__context__``, ``.reason`` and exception args."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        linked = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]
        stack.extend(x for x in linked if isinstance(x, BaseException))


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: resets, truncated bodies, timeouts, HTTP 408/429/5xx; never refused or DNS failures."""
    chain = list(_chain(exc))
    if any(isinstance(e, (ConnectionRefusedError, socket.gaierror)) for e in chain):
        return False
    for e in chain:
        code = getattr(e, "code", None)
        if isinstance(e, urllib.error.HTTPError) or type(e).__module__.startswith("google.api_core"):
            return code in _TRANSIENT_HTTP
        if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, TimeoutError)):
            return True
        if isinstance(e, (_Truncated, http.client.IncompleteRead, http.client.RemoteDisconnected)):
            return True
        if type(e).__name__ in ("ChunkedEncodingError", "ProtocolError", "ReadTimeout", "ConnectTimeout"):
            return True
    return False


def _retrying(call: Callable[[], T], budget_s: float) -> T:
    """Run ``call``; on transient errors retry after 0.25, 0.5, 1, 2 s (:data:`RETRY_FIRST_S` doubling)
    while the total sleep stays within ``budget_s``."""
    delay, slept = RETRY_FIRST_S, 0.0
    while True:
        try:
            return call()
        except Exception as exc:  # classified below; re-raised unless transient
            if not _is_transient(exc) or slept + delay > budget_s:
                raise
        time.sleep(delay)
        slept += delay
        delay *= 2


def _reason(exc: BaseException) -> str:
    """A short, one-line reason for a failed request."""
    if isinstance(exc, (_Missing, ValueError)):
        return str(exc)
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, urllib.error.HTTPError):
            return f"HTTP {e.code} {e.reason}"
        code = getattr(e, "code", None)
        if type(e).__module__.startswith("google.api_core") and code:
            return f"HTTP {int(code)} {getattr(code, 'phrase', '')}".rstrip()
    for kind, text in (
        (ConnectionRefusedError, "connection refused"),
        (socket.gaierror, "cannot resolve host"),
        (TimeoutError, "timed out"),
        (ConnectionResetError, "connection reset"),
    ):
        if any(isinstance(e, kind) for e in chain):
            return text
    if type(exc).__name__ == "DefaultCredentialsError":
        return "no Google credentials (run `gcloud auth application-default login`)"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


# ------------------------------------------------------------------------------------- small objects


def read_bytes(uri: str) -> bytes:
    """The content of a local file or GCS object (small objects: whole in memory)."""
    if _scheme(uri) == "gs":
        try:
            blob = _gs_blob(uri, RETRY_TOTAL_S)
            return _retrying(lambda: blob.download_as_bytes(retry=None, timeout=TIMEOUT_S), RETRY_TOTAL_S)
        except remote_errors() as exc:
            raise InputError(uri, f"cannot read: {_reason(exc)}") from exc
    path = _local_path(uri)
    if not path.is_file():
        raise InputError(uri, "file not found")
    return path.read_bytes()


def write_bytes(uri: str, data: bytes) -> str:
    """Write ``data`` to a local path (atomically) or a GCS object (whole by design); return ``uri``."""
    if _scheme(uri) == "gs":
        bucket, key = _split_gs(uri)
        blob = _gcs_client().bucket(bucket).blob(key)
        try:
            _retrying(lambda: blob.upload_from_string(data, retry=None, timeout=TIMEOUT_S), RETRY_TOTAL_S)
        except remote_errors() as exc:
            raise InputError(uri, f"cannot write: {_reason(exc)}") from exc
        return uri
    with atomic_path(_local_path(uri)) as tmp:
        tmp.write_bytes(data)
    return uri


def list_prefix(uri: str) -> list[str]:
    """URIs of the files directly or indirectly under a folder/prefix ``uri`` (sorted; [] if none)."""
    if _scheme(uri) == "gs":
        bucket, key = _split_gs(uri)
        prefix = key.rstrip("/") + "/"
        try:
            blobs = _retrying(
                lambda: list(_gcs_client().list_blobs(bucket, prefix=prefix, retry=None, timeout=TIMEOUT_S)),
                RETRY_TOTAL_S,
            )
        except remote_errors() as exc:
            raise InputError(uri, f"cannot list: {_reason(exc)}") from exc
        return sorted(f"gs://{bucket}/{b.name}" for b in blobs)
    root = _local_path(uri)
    return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def delete_prefix(uri: str) -> int:
    """Delete everything under a folder/prefix ``uri``; return how many files were removed."""
    items = list_prefix(uri)
    if _scheme(uri) == "gs":
        client = _gcs_client()
        for item in items:
            bucket, key = _split_gs(item)
            blob = client.bucket(bucket).blob(key)
            _retrying(functools.partial(blob.delete, retry=None), RETRY_TOTAL_S)
    else:
        shutil.rmtree(_local_path(uri), ignore_errors=True)
    return len(items)


def join(base: str, *parts: str) -> str:
    """Join URI/path segments with '/' (no normalisation of the scheme part)."""
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


@contextlib.contextmanager
def local_output(uri: str, cache_dir: str | Path | None = None) -> Iterator[Path]:
    """A local path to write ``uri``'s content to: the path itself for local URIs (write atomically
    there yourself), or a staging file that is uploaded to ``gs://`` when the block succeeds."""
    if _scheme(uri) != "gs":
        yield _local_path(uri)
        return
    stage_dir = Path(tempfile.mkdtemp(prefix="crownsam-out-", dir=_staging_root(cache_dir)))
    try:
        target = stage_dir / Path(_split_gs(uri)[1]).name
        yield target
        if target.exists():
            upload(target, uri)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def _staging_root(cache_dir: str | Path | None) -> Path:
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) / "staging"
    root.mkdir(parents=True, exist_ok=True)
    return root


# ---------------------------------------------------------------------------------------------- folders


def upload_dir(local: Path, uri: str, last: str | None = None) -> None:
    """Copy every file under ``local`` to ``uri`` (same relative paths); ``last`` is copied after all
    others, so its presence means the folder is complete."""
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() == last)
    for p in files:
        upload(p, join(uri, p.relative_to(local).as_posix()))


def download_dir(uri: str, local: Path, cache_dir: str | None = None) -> Path:
    """A local folder with the files under ``uri``: the folder itself when it is local, else a copy made
    of hard links into the download cache (objects are fetched once per generation)."""
    if not is_remote(uri):
        return Path(uri)
    base = uri.rstrip("/")
    items = list_prefix(base)
    if not items:
        raise InputError(uri, "nothing there")
    if local.exists():
        shutil.rmtree(local)
    for item in items:
        target = local / item[len(base) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        cached = fetch(item, cache_dir)
        try:
            target.hardlink_to(cached)
        except OSError:
            shutil.copyfile(cached, target)
    return local
