"""Storage layer against real services on loopback: gcp-storage-emulator and an ``http.server`` thread."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crownsam.common import storage
from crownsam.common.errors import InputError

try:
    from .gcs_emulator import free_port, gcs_emulator
except ImportError:  # tests/ collected without __init__.py files (rootdir-relative imports)
    from gcs_emulator import free_port, gcs_emulator

BUCKET = "crownsam-test"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """A running emulator (``STORAGE_EMULATOR_HOST`` set) with one bucket, for this module."""
    from google.cloud import storage as gcs

    with gcs_emulator() as url:
        gcs.Client.create_anonymous_client().create_bucket(BUCKET)
        yield url


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff 0.05 + 0.1 + 0.2 s instead of the production budget, so failures stay fast."""
    monkeypatch.setattr(storage, "RETRY_TOTAL_S", 0.4)
    monkeypatch.setattr(storage, "RETRY_FIRST_S", 0.05)


def gs_uri(name: str) -> str:
    """A fresh object URI in the test bucket."""
    return f"gs://{BUCKET}/{uuid.uuid4().hex}/{name}"


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (temporary ones included)."""
    return [p for p in folder.rglob("*") if p.is_file()]


def stamp(path: Path) -> tuple[int, int]:
    """Inode and mtime: both change if the file is downloaded again (atomic rename of a new file)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@dataclass
class WebServer:
    """A local HTTP server over ``root``, counting GET requests per path."""

    url: str
    root: Path
    gets: Counter[str] = field(default_factory=Counter)
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> number of 503 answers before success


def _handler(server: WebServer) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(server.root), **kwargs)

        def log_message(self, format: str, *args) -> None:
            pass

        def do_GET(self) -> None:
            server.gets[self.path] += 1
            if self.path.startswith("/truncated"):  # promises 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.wfile.flush()
                self.close_connection = True
                return
            if server.fail_first.get(self.path, 0) > 0:
                server.fail_first[self.path] -= 1
                self.send_error(503, "busy")
                return
            super().do_GET()

    return Handler


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A threaded ``http.server`` on 127.0.0.1 serving a temporary folder."""
    root = tmp_path_factory.mktemp("www")
    server = WebServer(url="", root=root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


# ---------------------------------------------------------------------------------------------- local


def test_is_remote() -> None:
    assert (
        storage.is_remote("gs://b/k") and storage.is_remote("https://x/y") and storage.is_remote("HTTP://x")
    )
    assert not storage.is_remote("/data/x.tif") and not storage.is_remote("file:///data/x.tif")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path))
    assert storage.default_cache_dir() == tmp_path
    monkeypatch.delenv("CROWNSAM_CACHE")
    assert storage.default_cache_dir() == Path.home() / ".cache" / "crownsam"


def test_local_paths_pass_through(tmp_path: Path) -> None:
    f = tmp_path / "ortho.tif"
    f.write_bytes(b"tif")
    assert storage.fetch(str(f)) == f
    assert storage.fetch(f.as_uri()) == f
    assert storage.exists(str(f)) and not storage.exists(str(tmp_path / "nope"))


def test_missing_local_file_is_one_line_input_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "chm.tif")
    with pytest.raises(InputError) as err:
        storage.fetch(missing, what="canopy height model")
    assert str(err.value) == f"{missing}: canopy height model not found"


def test_upload_to_local_path_and_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "a.json"
    src.write_text("{}")
    dest = tmp_path / "out" / "deep" / "a.json"
    assert storage.upload(src, str(dest)) == str(dest)
    assert dest.read_text() == "{}"
    assert files_under(dest.parent) == [dest]  # no temporary file left behind
    with pytest.raises(InputError, match="not found"):
        storage.upload(tmp_path / "none.json", str(dest))


def test_local_fingerprint_is_sha256_and_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"one")
    first = storage.fingerprint(str(f))
    assert first == "sha256:" + hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two")
    assert storage.fingerprint(str(f)) != first


# ---------------------------------------------------------------------------------------------- gs://


def test_gs_round_trip_and_cache_reuse(emulator: str, tmp_path: Path) -> None:
    src = tmp_path / "ortho.tif"
    src.write_bytes(b"pixels" * 1000)
    uri = gs_uri("ortho.tif")
    assert not storage.exists(uri)
    assert storage.upload(src, uri) == uri
    assert storage.exists(uri)

    cache = tmp_path / "cache"
    got = storage.fetch(uri, cache)
    assert got.read_bytes() == src.read_bytes()
    assert got.name == "ortho.tif" and got.is_relative_to(cache)
    before = stamp(got)
    time.sleep(0.01)
    assert storage.fetch(uri, cache) == got
    assert stamp(got) == before  # reused, not downloaded again
    assert files_under(cache) == [got]


def test_gs_changed_object_is_downloaded_again(emulator: str, tmp_path: Path) -> None:
    src, cache, uri = tmp_path / "v.txt", tmp_path / "cache", gs_uri("labels.gpkg")
    src.write_text("version 1")
    storage.upload(src, uri)
    first, fp1 = storage.fetch(uri, cache), storage.fingerprint(uri)
    src.write_text("version 2")
    storage.upload(src, uri)
    second, fp2 = storage.fetch(uri, cache), storage.fingerprint(uri)
    assert second != first and second.read_text() == "version 2"
    assert fp1 != fp2 and fp2.startswith("gs-generation:") and "md5:" in fp2
    assert f"md5:{hashlib.md5(b'version 2').hexdigest()}" in fp2
    assert storage.fingerprint(uri) == fp2  # stable while the object is unchanged


def test_gs_key_with_url_special_characters(emulator: str, tmp_path: Path) -> None:
    src = tmp_path / "s.txt"
    src.write_text("odd")
    uri = gs_uri("a b#c?d.txt")
    storage.upload(src, uri)
    assert storage.fetch(uri, tmp_path / "cache").read_text() == "odd"


def test_gs_missing_object_or_bucket(emulator: str, tmp_path: Path) -> None:
    uri = gs_uri("nope.tif")
    with pytest.raises(InputError) as err:
        storage.fetch(uri, tmp_path, what="orthophoto")
    assert str(err.value) == f"{uri}: cannot fetch orthophoto: no such object"
    with pytest.raises(InputError, match=r"cannot fetch file: no such bucket gs://no-such-bucket$"):
        storage.fetch("gs://no-such-bucket/x.tif", tmp_path)
    with pytest.raises(InputError, match="cannot fingerprint: no such object"):
        storage.fingerprint(uri)
    assert not storage.exists("gs://no-such-bucket/x.tif")
    assert files_under(tmp_path) == []


def test_gs_unreachable_server_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(InputError) as err:
        storage.fetch("gs://bucket/x.tif", tmp_path)
    assert str(err.value) == "gs://bucket/x.tif: cannot fetch file: connection refused"
    assert time.monotonic() - start < 2


# ---------------------------------------------------------------------------------------------- http(s)


def test_http_fetch_reuse_and_change(web: WebServer, tmp_path: Path) -> None:
    (web.root / "coarse.gpkg").write_bytes(b"v1")
    url, cache = f"{web.url}/coarse.gpkg", tmp_path / "cache"
    got = storage.fetch(url, cache)
    assert got.read_bytes() == b"v1" and got.name == "coarse.gpkg"
    before = stamp(got)
    time.sleep(0.01)
    assert storage.fetch(url, cache) == got and stamp(got) == before  # same validators: body not re-read
    assert storage.exists(url) and not storage.exists(f"{web.url}/absent.gpkg")

    (web.root / "coarse.gpkg").write_bytes(b"version two")  # new Content-Length / Last-Modified
    again = storage.fetch(url, cache)
    assert again != got and again.read_bytes() == b"version two"
    assert storage.fingerprint(url) == "sha256:" + hashlib.sha256(b"version two").hexdigest()


def test_http_404_is_input_error(web: WebServer, tmp_path: Path) -> None:
    url = f"{web.url}/missing.tif"
    with pytest.raises(InputError) as err:
        storage.fetch(url, tmp_path, what="orthophoto")
    assert str(err.value) == f"{url}: cannot fetch orthophoto: HTTP 404 File not found"
    assert web.gets["/missing.tif"] == 1  # a 404 is not retried
    assert files_under(tmp_path) == []


def test_http_connection_refused_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/x.tif"
    start = time.monotonic()
    with pytest.raises(InputError, match=r": cannot fetch file: connection refused$"):
        storage.fetch(url, tmp_path)
    assert time.monotonic() - start < 1


def test_http_truncated_body_leaves_no_partial_file(web: WebServer, tmp_path: Path) -> None:
    url = f"{web.url}/truncated.bin"
    with pytest.raises(InputError) as err:
        storage.fetch(url, tmp_path)
    assert str(err.value) == f"{url}: cannot fetch file: connection closed after 10 of 1000 bytes"
    assert web.gets["/truncated.bin"] == 4  # first try + retries after 0.05, 0.1 and 0.2 s of backoff
    assert files_under(tmp_path) == []


def test_http_transient_503_is_retried(web: WebServer, tmp_path: Path) -> None:
    (web.root / "flaky.txt").write_text("ok")
    web.fail_first["/flaky.txt"] = 2
    assert storage.fetch(f"{web.url}/flaky.txt", tmp_path).read_text() == "ok"
    assert web.gets["/flaky.txt"] == 3
