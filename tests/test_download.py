"""download.py and weights_cache.py against a real HTTP server on 127.0.0.1: cache, resume, retries, checksum, lock, offline, mirror.

The files downloaded are made by conftest.py (random bytes; a tiny unet and an OpenCV graph for the
command's end to end test) and described by catalogue entries with their real sha256 and size, so no
../shared is needed; only one end to end case also runs a published OpenCV graph (LapSRN x4)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import OPENCV_MODEL, RANDOM_MODEL, RANDOM_SMALL_MODEL, UNET_MODEL
from http_server import HAS_OPENCV_WEIGHTS, NEEDS_OPENCV_WEIGHTS, OPENCV_WEIGHTS_DIR, FileServer, free_port
from upscale_cli import download, weights_cache
from upscale_cli.catalog import load_catalog
from upscale_cli.download_settings import DEADLINE_S, MIN_RATE_BPS, RATE_WINDOW_S
from upscale_cli.model_spec import WeightsFile
from upscale_cli.errors import ChecksumError, DownloadError, OfflineError, WeightsError

NAME = f"{RANDOM_MODEL}_x2.pb"  # the generated x2 file: 90,000 random bytes
SIZE = 90_000


@pytest.fixture(autouse=True)
def download_settings(cache, monkeypatch) -> None:
    """The shared empty cache (conftest.py), with three retries and a 5 s timeout for every test."""
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "3")
    monkeypatch.setenv("UPSCALE_DOWNLOAD_TIMEOUT", "5")


@pytest.fixture
def server(generated_weights):
    with FileServer(generated_weights.folder) as srv:
        yield srv


@pytest.fixture
def weights(generated_weights) -> WeightsFile:
    """The generated x2 entry (its catalogue URL is never contacted in these tests)."""
    file = generated_weights.file(RANDOM_MODEL, 2)
    assert (file.filename, file.size) == (NAME, SIZE)
    return file


@pytest.fixture
def data(generated_weights) -> bytes:
    """The bytes of the generated x2 file."""
    return generated_weights.data(RANDOM_MODEL, 2)


def served(file: WeightsFile, server: FileServer, name: str | None = None) -> WeightsFile:
    """The same file with its URL pointing at the test server."""
    return dataclasses.replace(file, url=server.url_for(name or file.filename))


def files_under(root: Path) -> list[str]:
    """Names of the files in the cache, lock files aside."""
    return sorted(p.name for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---------------------------------------------------------------- the happy path


def test_download_verifies_and_caches_by_hash(server, weights, data, cache):
    path = download.ensure_weights(served(weights, server), progress=False)
    assert path == cache / "weights" / weights.sha256 / NAME
    assert path.read_bytes() == data
    assert weights_cache.is_cached(weights) and weights_cache.cached_path(weights) == path
    assert files_under(cache) == [NAME]  # no .part left behind
    assert server.full_downloads(NAME) == 1


def test_cache_hit_makes_no_request(server, weights):
    file = served(weights, server)
    first = download.ensure_weights(file, progress=False)
    weights_cache._verified.clear()  # make the second call re-hash the file from disk
    assert download.ensure_weights(file, progress=False) == first
    assert len(server.requests) == 1


def test_cache_dir_defaults_to_platform_cache(monkeypatch):
    import platformdirs

    monkeypatch.delenv("UPSCALE_CACHE_DIR")
    assert weights_cache.cache_dir() == Path(platformdirs.user_cache_dir("upscale-cli", appauthor=False))


def test_progress_lines_when_not_a_terminal(server, weights, capfd):
    download.ensure_weights(served(weights, server), progress=True)
    err = capfd.readouterr().err
    assert f"downloading {NAME} (90.0 KB) from {server.url}" in err and f"downloaded {NAME}" in err


def test_no_output_without_progress(server, weights, capfd):
    download.ensure_weights(served(weights, server), progress=False)
    assert capfd.readouterr() == ("", "")


# ---------------------------------------------------------------- resume and retries


def test_resume_after_connection_cut(server, weights):
    server.faults.cut_after = 40_000
    path = download.ensure_weights(served(weights, server), progress=False)
    first, second = server.requests_for(NAME)
    assert first.range is None and first.bytes_sent == 40_000
    assert second.range and second.range.startswith("bytes=") and second.status == 206
    assert second.bytes_sent < weights.size  # only the rest was fetched
    assert weights_cache.hash_file(path) == weights.sha256


def test_resume_from_existing_part_file(server, weights, data, cache):
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:50_000])
    path = download.ensure_weights(served(weights, server), progress=False)
    # the part's last RESUME_CHECK_BYTES are asked for again, to check them before continuing
    assert [r.range for r in server.requests_for(NAME)] == [f"bytes={50_000 - download.RESUME_CHECK_BYTES}-"]
    assert weights_cache.hash_file(path) == weights.sha256 and not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, weights):
    server.faults.cut_after = 40_000
    server.faults.honour_range = False
    path = download.ensure_weights(served(weights, server), progress=False)
    second = server.requests_for(NAME)[1]
    assert second.range is not None and second.status == 200 and second.bytes_sent == weights.size
    assert weights_cache.hash_file(path) == weights.sha256


def test_retries_on_500_then_succeeds(server, weights):
    server.faults.status, server.faults.status_times = 500, 2
    download.ensure_weights(served(weights, server), progress=False)
    assert [r.status for r in server.requests_for(NAME)] == [500, 500, 200]


def test_persistent_500_gives_up(server, weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "2")
    server.faults.status = 500
    with pytest.raises(DownloadError, match=r"HTTP 500"):
        download.ensure_weights(served(weights, server), progress=False)
    assert len(server.requests) == 3


def test_read_timeout_is_a_download_error(server, weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("UPSCALE_DOWNLOAD_TIMEOUT", "0.2")
    server.faults.stall_s = 1.0
    with pytest.raises(DownloadError, match="timed out"):
        download.ensure_weights(served(weights, server), progress=False)


# ---------------------------------------------------------------- failures


def test_wrong_bytes_raise_checksum_error_and_leave_nothing(server, weights, cache):
    server.faults.wrong_bytes = True
    with pytest.raises(ChecksumError, match=f"expected {weights.sha256}"):
        download.ensure_weights(served(weights, server), progress=False)
    assert files_under(cache) == []  # neither the file nor a .part
    assert not weights_cache.is_cached(weights)


@pytest.mark.parametrize("status", [404, 403])
def test_http_error_names_url_and_status(server, weights, status):
    server.faults.status = status
    file = served(weights, server)
    with pytest.raises(DownloadError) as info:
        download.ensure_weights(file, progress=False)
    assert f"HTTP {status}" in str(info.value) and file.url in str(info.value)
    assert len(server.requests) == 1  # client errors are not retried


def test_missing_file_is_404(server, weights):
    with pytest.raises(DownloadError, match=r"HTTP 404 .*/nope\.pb"):
        download.ensure_weights(served(weights, server, "nope.pb"), progress=False)


def test_catalogue_mirrors_are_tried_in_order(server, weights):
    file = dataclasses.replace(weights, url=server.url_for("gone.pb"), mirrors=(server.url_for(NAME),))
    assert download.ensure_weights(file, progress=False).is_file()
    assert [r.status for r in server.requests] == [404, 200]


def test_connection_refused(weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "1")
    url = f"http://127.0.0.1:{free_port()}/{NAME}"
    with pytest.raises(DownloadError, match="connection refused") as info:
        download.ensure_weights(dataclasses.replace(weights, url=url), progress=False)
    assert url in str(info.value)


def test_dns_failure(weights):
    url = f"http://no-such-host.invalid/{NAME}"
    with pytest.raises(DownloadError, match="cannot resolve host no-such-host.invalid"):
        download.ensure_weights(dataclasses.replace(weights, url=url), progress=False)


def test_cache_folder_not_writable(server, weights, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("UPSCALE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(WeightsError, match="not writable; set UPSCALE_CACHE_DIR"):
        download.ensure_weights(served(weights, server), progress=False)
    assert server.requests == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full(server, weights, cache):
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(WeightsError, match="disk full"):
        download.ensure_weights(served(weights, server), progress=False)
    assert not part.is_symlink() and not weights_cache.is_cached(weights)


def test_corrupt_cached_file_is_fetched_again(server, weights):
    file = served(weights, server)
    path = download.ensure_weights(file, progress=False)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    weights_cache._verified.clear()
    assert weights_cache.hash_file(download.ensure_weights(file, progress=False)) == weights.sha256
    assert server.full_downloads(NAME) == 2


def test_packaged_file_missing_from_install(weights):
    file = dataclasses.replace(weights, url=None, packaged=True, filename="not-shipped.safetensors")
    with pytest.raises(WeightsError, match="missing from the installation"):
        download.ensure_weights(file)


# ---------------------------------------------------------------- two processes, one download

CHILD = """
import json, sys, time
from upscale_cli.model_spec import WeightsFile
from upscale_cli.download import ensure_weights
file = WeightsFile(**json.loads(sys.argv[2]))
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(ensure_weights(file, progress=False))
"""


def as_json(file: WeightsFile) -> str:
    """A catalogue entry for a child process (which has no patched catalogue)."""
    return json.dumps({"scale": file.scale, "filename": file.filename, "sha256": file.sha256, "size": file.size,
                       "url": file.url})


def test_two_processes_download_once(server, weights, cache):
    server.faults.bytes_per_s = 150_000  # ~0.6 s for the file, so the two requests overlap
    env = {**os.environ, "UPSCALE_WEIGHTS_MIRROR": server.url}
    start_at = time.time() + 1.5  # both children call ensure_weights at this moment
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(start_at), as_json(weights)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert paths == {str(cache / "weights" / weights.sha256 / NAME)}
    assert len(server.requests_for(NAME)) == 1 and server.full_downloads(NAME) == 1
    assert list(cache.rglob("*.lock")) == []  # the lock goes with the download that took it


# ---------------------------------------------------------------- offline and mirrors


def test_offline_with_cold_cache_says_what_to_download(weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        download.ensure_weights(weights, progress=False)
    message = str(info.value)
    assert weights.url in message and str(weights_cache.cached_path(weights)) in message


def test_offline_with_warm_cache(server, weights, monkeypatch):
    download.ensure_weights(served(weights, server), progress=False)
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    weights_cache._verified.clear()
    assert download.ensure_weights(weights, progress=False) == weights_cache.cached_path(weights)
    assert len(server.requests) == 1


def test_offline_never_uses_an_http_mirror(server, weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", server.url)
    with pytest.raises(OfflineError):
        download.ensure_weights(weights, progress=False)
    assert server.requests == []


@pytest.mark.parametrize("offline", ["", "1"])
def test_mirror_folder_copies_and_verifies(weights, generated_weights, monkeypatch, offline):
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(generated_weights.folder))
    monkeypatch.setenv("UPSCALE_OFFLINE", offline)  # a local folder is not the network
    path = download.ensure_weights(weights, progress=False)
    assert path == weights_cache.cached_path(weights) and weights_cache.hash_file(path) == weights.sha256


def test_mirror_folder_as_file_url(weights, generated_weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", generated_weights.folder.as_uri())
    assert download.ensure_weights(weights, progress=False).is_file()


def test_mirror_folder_with_wrong_bytes(weights, tmp_path, monkeypatch):
    (tmp_path / NAME).write_bytes(b"\0" * weights.size)
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(tmp_path))
    with pytest.raises(ChecksumError):
        download.ensure_weights(weights, progress=False)
    assert files_under(weights_cache.cache_dir()) == []


def test_mirror_folder_without_the_file(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(tmp_path))
    with pytest.raises(WeightsError, match=f"{NAME} is not in the mirror folder"):
        download.ensure_weights(weights, progress=False)


def test_mirror_url_fetches_by_file_name(server, weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", server.url + "/")
    path = download.ensure_weights(weights, progress=False)  # the upstream github URL is never tried
    assert [r.path for r in server.requests] == [f"/{NAME}"]
    assert weights_cache.hash_file(path) == weights.sha256


# ---------------------------------------------------------------- maintenance


def test_verify_and_clear_cache(server, weights, generated_weights):
    good = download.ensure_weights(served(weights, server), progress=False)
    other = generated_weights.file(RANDOM_SMALL_MODEL, 2)
    bad = download.ensure_weights(served(other, server), progress=False)
    bad.write_bytes(b"corrupt")
    report = weights_cache.verify_cache()
    assert report.good == [good] and report.corrupt == [bad] and not report.ok
    assert not bad.exists()
    assert weights_cache.clear_cache() == (1, weights.size)
    assert not weights_cache.weights_dir().exists() and not weights_cache.is_cached(weights)


# ---------------------------------------------------------------- end to end (needs the engine)


END_TO_END = [
    pytest.param(UNET_MODEL, 2, id="generated-unet"),
    pytest.param(OPENCV_MODEL, 2, id="generated-opencv-graph"),
    pytest.param("opencv-lapsrn", 4, id="published-lapsrn",
                 marks=pytest.mark.skipif(not HAS_OPENCV_WEIGHTS, reason=NEEDS_OPENCV_WEIGHTS)),
]


@pytest.mark.parametrize("model,scale", END_TO_END)
def test_model_end_to_end(model, scale, tmp_path, monkeypatch, generated_weights, generated_catalogue):
    """The issue's bar: download once through a mirror URL, verify, cache, upscale; then the same
    command offline with the server gone gives the identical image from the cache. Run with models
    made by conftest.py (a tiny unet, an OpenCV graph) everywhere, and the published LapSRN x4."""
    from PIL import Image
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    import image_factory

    folder = generated_weights.folder if model in generated_weights.specs else OPENCV_WEIGHTS_DIR
    name = generated_catalogue[model].files[scale].filename
    png = image_factory.make_rgb_png(tmp_path, "photo.png", size=(40, 28))
    online, offline = tmp_path / "online.png", tmp_path / "offline.png"
    args = [str(png), "-m", model, "-x", str(scale), "-o"]
    with FileServer(folder) as weights_server:
        monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", weights_server.url)
        result = CliRunner().invoke(app, [*args, str(online)])
        assert result.exit_code == 0, result.output
        assert weights_server.full_downloads(name) == 1
        again = CliRunner().invoke(app, [*args, str(online), "--overwrite"])
        assert again.exit_code == 0 and weights_server.full_downloads(name) == 1  # cached
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    result = CliRunner().invoke(app, [*args, str(offline)])
    assert result.exit_code == 0, result.output
    assert Image.open(online).size == (40 * scale, 28 * scale)
    assert online.read_bytes() == offline.read_bytes()


def test_wrong_bytes_through_the_command_write_no_image(tmp_path, monkeypatch, cache, generated_weights,
                                                         generated_catalogue):
    """A mirror serving corrupted weights: one clear line, exit 1, no output image, nothing cached."""
    from typer.testing import CliRunner

    from upscale_cli.cli import app

    import image_factory

    png = image_factory.make_rgb_png(tmp_path, "photo.png", size=(24, 16))
    before = png.read_bytes()
    out = tmp_path / "out.png"
    with FileServer(generated_weights.folder) as bad_server:
        bad_server.faults.wrong_bytes = True
        monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", bad_server.url)
        result = CliRunner().invoke(app, [str(png), "-m", UNET_MODEL, "-x", "2", "-o", str(out), "-q"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "sha256" in errors[0].lower() and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    assert files_under(cache) == []
    assert png.read_bytes() == before


def test_packaged_weights_match_their_catalogue_entries():
    """Every weights file shipped inside the package has the size and sha256 that weights.toml gives."""
    import hashlib

    from upscale_cli.weights_cache import packaged_weights_path

    packaged = [f for spec in load_catalog().values() for f in spec.files.values() if f.packaged]
    assert {f.filename for f in packaged} >= {"unet_x2.safetensors", "unet_x4.safetensors", "unet_restore.safetensors"}
    for file in packaged:
        path = packaged_weights_path(file.filename)
        assert path.stat().st_size == file.size, file.filename
        assert hashlib.sha256(path.read_bytes()).hexdigest() == file.sha256, file.filename


# ---------------------------------------------------------------- issue 11.5: catalogue fields, sizes, settings, locks

from upscale_cli.catalog import parse_catalog  # noqa: E402
from upscale_cli.errors import CatalogError, WrongSizeError  # noqa: E402

GOOD_SHA = "59f77351e1d7c0057bf6fe088b4a8a07e42c468c8c8aebb674a6b4ea1823221d"


def catalogue_text(filename: str = "ESPCN_x2.pb", sha256: str = GOOD_SHA, size: object = 86446) -> str:
    return f"""
[models.evil]
arch = "opencv-espcn"

[[models.evil.files]]
scale = 2
filename = {filename!r}
url = "http://127.0.0.1:9/x.pb"
sha256 = {sha256!r}
size = {size}
"""


@pytest.mark.parametrize("filename", ["../../../../tmp/x.pb", "/tmp/x.pb", "sub/x.pb", "..\\x.pb", "C:x.pb", "..",
                                      "", "x.pb\n", "x.exe"])
def test_catalogue_filename_must_be_a_bare_weights_name(filename, tmp_path):
    with pytest.raises(CatalogError, match=r"model 'evil', file x2: filename"):
        parse_catalog(catalogue_text(filename=filename))


@pytest.mark.parametrize("sha256", ["../../x", GOOD_SHA[:-1], GOOD_SHA + "0", "g" * 64, ""])
def test_catalogue_sha256_must_be_64_hex_digits(sha256):
    with pytest.raises(CatalogError, match=r"model 'evil', file x2: sha256 must be 64"):
        parse_catalog(catalogue_text(sha256=sha256))


@pytest.mark.parametrize("size", [0, -1, "true", '"86446"'])
def test_catalogue_size_must_be_a_positive_whole_number(size):
    with pytest.raises(CatalogError, match="size must be a whole number"):
        parse_catalog(catalogue_text(size=size))


def test_catalogue_upper_case_sha256_is_accepted():
    assert parse_catalog(catalogue_text(sha256=GOOD_SHA.upper()))["evil"].files[2].sha256 == GOOD_SHA


def test_traversing_filename_can_never_reach_the_cache_code(weights, cache, tmp_path):
    """Even a WeightsFile made in code cannot name a path outside CACHE/weights/<sha256>/."""
    for bad in ({"filename": "../../../escape.pb"}, {"sha256": "../../x"}):
        with pytest.raises(CatalogError):
            dataclasses.replace(weights, **bad)
    assert not (tmp_path / "escape.pb").exists() and not cache.exists()


class _EndlessServer:
    """Answers every GET with 200, no Content-Length, and bytes until the client hangs up (or
    `cap` bytes, so a client that never stops cannot hang the test)."""

    def __init__(self, cap: int = 40_000_000) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler

        from http_server import _QuietServer

        outer = self
        self.sent = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()
                chunk = b"\x00" * 65536
                try:
                    while outer.sent < cap:
                        self.wfile.write(chunk)
                        outer.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return "http://%s:%d" % self._httpd.server_address[:2]

    def __enter__(self) -> "_EndlessServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_endless_stream_stops_at_the_catalogue_size(weights, cache):
    with _EndlessServer() as endless:
        url = f"{endless.url}/{NAME}"
        with pytest.raises(WrongSizeError) as info:
            download.ensure_weights(dataclasses.replace(weights, url=url), progress=False)
    message = str(info.value)
    assert url in message and "more than the catalogue's 90,000 bytes" in message
    assert endless.sent < 8_000_000  # stopped at the size (plus what the socket buffers held)
    assert files_under(cache) == [] and list(cache.rglob("*.lock")) == []


@pytest.mark.parametrize("length", [50_000, 100_000])
def test_file_of_another_size_says_so_with_its_url(length, weights, data, cache, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / NAME).write_bytes((data * 2)[:length])
    with FileServer(folder) as srv:
        file = served(weights, srv)
        with pytest.raises(WrongSizeError) as info:
            download.ensure_weights(file, progress=False)
        assert len(srv.requests) == 1  # a wrong file is not retried
    assert str(info.value) == (f"{NAME} from {file.url} is {length:,} bytes, but the catalogue says 90,000; "
                               "the download was deleted")
    assert files_under(cache) == []


def test_resumed_download_of_another_total_size_is_refused(server, weights, data, generated_weights, cache, tmp_path):
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    x3 = generated_weights.file(RANDOM_MODEL, 3)
    assert x3.size == 95_000
    other = dataclasses.replace(weights, url=server.url_for(x3.filename))  # its Content-Range total is 95000
    with pytest.raises(WrongSizeError, match="is 95,000 bytes, but the catalogue says 90,000"):
        download.ensure_weights(other, progress=False)
    assert not part.exists()


def test_mirror_folder_file_of_another_size(weights, tmp_path, monkeypatch):
    (tmp_path / NAME).write_bytes(b"\0" * 100)
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", str(tmp_path))
    with pytest.raises(WrongSizeError, match=f"{NAME} from {tmp_path / NAME} is 100 bytes"):
        download.ensure_weights(weights, progress=False)
    assert files_under(weights_cache.cache_dir()) == []


def test_checksum_failure_prints_no_downloaded_line(server, weights, capfd):
    server.faults.wrong_bytes = True
    with pytest.raises(ChecksumError):
        download.ensure_weights(served(weights, server), progress=True)
    err = capfd.readouterr().err
    assert f"downloading {NAME}" in err and "downloaded" not in err


BAD_ENVIRONMENT = [
    ("UPSCALE_DOWNLOAD_RETRIES", "-5"), ("UPSCALE_DOWNLOAD_RETRIES", "abc"), ("UPSCALE_DOWNLOAD_RETRIES", "2.5"),
    ("UPSCALE_DOWNLOAD_RETRIES", "1000000000"), ("UPSCALE_DOWNLOAD_RETRIES", "٣"),
    ("UPSCALE_DOWNLOAD_BACKOFF", "-1"), ("UPSCALE_DOWNLOAD_BACKOFF", "nan"), ("UPSCALE_DOWNLOAD_BACKOFF", "inf"),
    ("UPSCALE_DOWNLOAD_BACKOFF", "1e308"), ("UPSCALE_DOWNLOAD_BACKOFF", "soon"),
    ("UPSCALE_DOWNLOAD_TIMEOUT", "0"), ("UPSCALE_DOWNLOAD_TIMEOUT", "-3"), ("UPSCALE_DOWNLOAD_TIMEOUT", "nan"),
    ("UPSCALE_DOWNLOAD_TIMEOUT", "1e300"), ("UPSCALE_DOWNLOAD_TIMEOUT", "30s"),
    ("UPSCALE_OFFLINE", "maybe"), ("UPSCALE_WEIGHTS_MIRROR", "ftp://example.com/w"),
    ("UPSCALE_WEIGHTS_MIRROR", "http://"),
]


@pytest.mark.parametrize("name,value", BAD_ENVIRONMENT)
def test_bad_environment_value_names_the_variable(name, value, server, weights, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(WeightsError) as info:
        download.ensure_weights(served(weights, server), progress=False)
    assert str(info.value).startswith(name) and repr(value.strip()) in str(info.value)
    assert server.requests == []


def test_empty_environment_values_mean_the_defaults(server, weights, monkeypatch):
    for name in ("UPSCALE_DOWNLOAD_RETRIES", "UPSCALE_DOWNLOAD_BACKOFF", "UPSCALE_DOWNLOAD_TIMEOUT", "UPSCALE_OFFLINE",
                 "UPSCALE_WEIGHTS_MIRROR"):
        monkeypatch.setenv(name, " ")
    assert download.ensure_weights(served(weights, server), progress=False).is_file()


def test_zero_retries_is_one_attempt(server, weights, monkeypatch):
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "0")
    server.faults.status = 500
    with pytest.raises(DownloadError, match="HTTP 500"):
        download.ensure_weights(served(weights, server), progress=False)
    assert len(server.requests) == 1


def locks_under(root: Path) -> list[Path]:
    return sorted(root.rglob("*.lock"))


def test_lock_removed_after_success_and_after_failure(server, weights, generated_weights, cache):
    download.ensure_weights(served(weights, server), progress=False)
    assert locks_under(cache) == []
    other = generated_weights.file(RANDOM_SMALL_MODEL, 2)
    server.faults.status = 404
    with pytest.raises(DownloadError):
        download.ensure_weights(served(other, server), progress=False)
    server.faults.status, server.faults.wrong_bytes = None, True
    with pytest.raises(ChecksumError):
        download.ensure_weights(served(other, server), progress=False)
    assert locks_under(cache) == []


KILLED_CHILD = """
import json, sys
from upscale_cli.model_spec import WeightsFile
from upscale_cli.download import ensure_weights
ensure_weights(WeightsFile(**json.loads(sys.argv[1])), progress=False)
"""


def test_killed_run_leftovers_are_resumed_and_removed_but_only_its_own(server, weights, cache, monkeypatch):
    folder = cache / "weights" / weights.sha256
    part, lock = folder / (NAME + ".part"), folder / (NAME + ".lock")
    server.faults.bytes_per_s = 20_000  # ~4 s for the file: time to kill the child mid-way
    env = {**os.environ, "UPSCALE_WEIGHTS_MIRROR": server.url}
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, as_json(weights)], env=env)
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= 20_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.kill()
    child.wait(timeout=10)
    assert part.exists() and lock.exists()  # what a killed run leaves
    others = [folder / "FSRCNN_x2.pb.part", folder / "FSRCNN_x2.pb.lock", cache / "weights" / ("f" * 64) / "x.pb.lock"]
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"someone else's")
    server.faults.bytes_per_s = None
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", server.url)
    path = download.ensure_weights(weights, progress=False)
    assert weights_cache.hash_file(path) == weights.sha256
    assert server.requests_for(NAME)[-1].range.startswith("bytes=")  # the killed run's part was resumed
    assert not part.exists() and not lock.exists()
    assert all(p.exists() for p in others)


def test_leftovers_beside_a_cached_file_are_removed(server, weights, cache):
    path = download.ensure_weights(served(weights, server), progress=False)
    part, lock = path.with_name(NAME + ".part"), path.with_name(NAME + ".lock")
    part.write_bytes(b"stale")
    lock.write_bytes(b"")
    other = path.with_name("LapSRN_x2.pb.part")
    other.write_bytes(b"not ours")
    weights_cache._verified.clear()
    assert download.ensure_weights(served(weights, server), progress=False) == path
    assert not part.exists() and not lock.exists() and other.exists()


def test_leftovers_of_a_running_download_are_left_alone(server, weights, cache):
    import fcntl

    path = download.ensure_weights(served(weights, server), progress=False)
    part, lock = path.with_name(NAME + ".part"), path.with_name(NAME + ".lock")
    part.write_bytes(b"in progress")
    with open(lock, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another process downloading right now
        assert download.ensure_weights(served(weights, server), progress=False) == path
        assert part.exists() and lock.exists()


# ---------------------------------------------------------------- issue 30: time limits (item 7)

from http_server import HTML_PAGE  # noqa: E402


def set_limits(monkeypatch, **values: object) -> None:
    """UPSCALE_DOWNLOAD_<NAME> for each keyword (deadline=1 sets UPSCALE_DOWNLOAD_DEADLINE=1)."""
    for name, value in values.items():
        monkeypatch.setenv(f"UPSCALE_DOWNLOAD_{name.upper()}", str(value))


def test_trickling_body_is_stopped_by_the_minimum_rate(server, weights, cache, monkeypatch):
    """A byte every 50 ms, each read far inside the 2 s read timeout: the rate check stops it after
    its window (the old code read on for the whole trickle, then retried it)."""
    set_limits(monkeypatch, timeout=2, min_rate=1000, rate_window=0.5)
    server.faults.trickle_s = 0.05
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download.ensure_weights(served(weights, server), progress=False)
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert "slower than the minimum 1,000 bytes/s" in message and "UPSCALE_DOWNLOAD_MIN_RATE" in message
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    assert f"{part.stat().st_size:,} of 90,000 bytes arrived and are kept" in message  # the next run continues them
    assert len(server.requests) == 1  # a limit is not retried


@pytest.mark.parametrize("fault", ["trickle_s", "trickle_headers_s"])
def test_deadline_stops_a_slow_body_and_slow_headers(fault, server, weights, monkeypatch):
    """With the rate check off, the deadline alone ends it; headers sent a byte at a time are cut off
    too (the watcher shuts the socket: no read ever returns to check a clock there)."""
    set_limits(monkeypatch, timeout=2, min_rate=0, deadline=1)
    setattr(server.faults, fault, 0.05)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"not done within the 1 s deadline \(set UPSCALE_DOWNLOAD_DEADLINE"):
        download.ensure_weights(served(weights, server), progress=False)
    assert 0.9 < time.monotonic() - start < 3


def test_deadline_ends_the_wait_between_retries(server, weights, monkeypatch):
    set_limits(monkeypatch, retries=1, backoff=30, deadline=1)
    server.faults.status = 500
    start = time.monotonic()
    with pytest.raises(DownloadError, match="1 s deadline"):
        download.ensure_weights(served(weights, server), progress=False)
    assert time.monotonic() - start < 3 and len(server.requests) == 1


def test_a_slow_but_steady_server_is_not_stopped(server, weights, monkeypatch):
    set_limits(monkeypatch, min_rate=1000, rate_window=0.2, deadline=30)
    server.faults.bytes_per_s = 200_000  # ~0.45 s in bursts of 16 KiB: several rate windows, all fast enough
    path = download.ensure_weights(served(weights, server), progress=False)
    assert weights_cache.hash_file(path) == weights.sha256 and len(server.requests) == 1


def test_limits_default_to_the_named_constants(monkeypatch):
    for name in ("DEADLINE", "MIN_RATE", "RATE_WINDOW"):
        monkeypatch.delenv(f"UPSCALE_DOWNLOAD_{name}", raising=False)
    settings = download.download_settings()
    assert (settings.deadline_s, settings.min_rate_bps, settings.rate_window_s) == (
        DEADLINE_S, MIN_RATE_BPS, RATE_WINDOW_S)


@pytest.mark.parametrize("name,value", [("UPSCALE_DOWNLOAD_DEADLINE", "0"), ("UPSCALE_DOWNLOAD_DEADLINE", "-1"),
                                        ("UPSCALE_DOWNLOAD_DEADLINE", "nan"), ("UPSCALE_DOWNLOAD_DEADLINE", "1e9"),
                                        ("UPSCALE_DOWNLOAD_MIN_RATE", "-1"), ("UPSCALE_DOWNLOAD_MIN_RATE", "1.5"),
                                        ("UPSCALE_DOWNLOAD_MIN_RATE", "fast"), ("UPSCALE_DOWNLOAD_MIN_RATE", "1e12"),
                                        ("UPSCALE_DOWNLOAD_RATE_WINDOW", "0"), ("UPSCALE_DOWNLOAD_RATE_WINDOW", "inf")])
def test_bad_limit_values_name_the_variable(name, value, server, weights, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(WeightsError) as info:
        download.ensure_weights(served(weights, server), progress=False)
    assert str(info.value).startswith(name) and repr(value) in str(info.value)
    assert server.requests == []


RECIPE_CHILD_TIMEOUT_S = 30  # the old code was still downloading at 60 s


def test_issue_recipe_slowloris_through_the_command(tmp_path, monkeypatch):
    """The issue's recipe through a subprocess of the real command: a server sending 1 byte every
    0.1 s with correct headers, UPSCALE_DOWNLOAD_TIMEOUT=2: one line naming the limit, exit 1, in seconds."""
    file = load_catalog()["opencv-espcn"].files[2]
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / file.filename).write_bytes(os.urandom(file.size))  # never finishes: any bytes do
    with FileServer(tmp_path / "served") as slow:
        slow.faults.trickle_s = 0.1
        env = {**os.environ, "UPSCALE_CACHE_DIR": str(tmp_path / "cache"), "UPSCALE_WEIGHTS_MIRROR": slow.url,
               "UPSCALE_DOWNLOAD_TIMEOUT": "2", "UPSCALE_DOWNLOAD_RATE_WINDOW": "1", "UPSCALE_OFFLINE": ""}
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "upscale_cli", "models", "download", "opencv-espcn", "-x", "2",
                                 "-q"], env=env, capture_output=True, text=True, timeout=RECIPE_CHILD_TIMEOUT_S)
        elapsed = time.monotonic() - start
    assert result.returncode == 1 and elapsed < 15, (elapsed, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not download {slow.url}/{file.filename}: slower than")
    assert "UPSCALE_DOWNLOAD_MIN_RATE" in lines[0] and "Traceback" not in result.stderr


# ---------------------------------------------------------------- issue 30: a part that is not the file's beginning (item 11)

LEFTOVER_PARTS = {
    "an HTML page": lambda data: HTML_PAGE,
    "an HTML page longer than the check": lambda data: HTML_PAGE * 200,
    "longer than the file": lambda data: data + b"x" * 1000,
    "an HTML page, then the file's own bytes": lambda data: HTML_PAGE + data[len(HTML_PAGE):50_000],
    "another file's bytes": lambda data: bytes(b ^ 0xFF for b in data[:50_000]),
    "the whole file, but wrong at the start": lambda data: HTML_PAGE + data[len(HTML_PAGE):],
}


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "no-range"])
@pytest.mark.parametrize("leftover", list(LEFTOVER_PARTS))
def test_a_part_that_is_not_the_files_beginning_is_replaced_in_the_same_run(leftover, honour_range, server, weights,
                                                                              data, cache):
    """Each leftover `.part` that cannot be this file's beginning is dropped and the file fetched
    from byte 0 by the same call (the old code appended to it, failed the checksum, and only a
    third run succeeded)."""
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(LEFTOVER_PARTS[leftover](data))
    server.faults.honour_range = honour_range
    path = download.ensure_weights(served(weights, server), progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert len(server.requests) <= 2  # at most a resume that was refused, then the whole file


def test_a_good_part_is_still_continued(server, weights, data, cache):
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:60_000])
    path = download.ensure_weights(served(weights, server), progress=False)
    (request,) = server.requests_for(NAME)
    assert request.status == 206 and request.bytes_sent == 90_000 - 60_000 + download.RESUME_CHECK_BYTES
    assert path.read_bytes() == data


@pytest.mark.parametrize("shift", [-1, 1, 5000])
def test_a_206_for_other_bytes_than_asked_drops_the_part(shift, server, weights, data, cache):
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:60_000])
    server.faults.content_range_shift = shift
    path = download.ensure_weights(served(weights, server), progress=False)
    assert path.read_bytes() == data
    assert [r.range is None for r in server.requests_for(NAME)] == [False, True]  # refused, then from byte 0


def test_html_part_left_by_a_captive_portal_then_a_good_server(server, weights, data, cache, monkeypatch):
    """The issue's recipe: a portal's page without a length is left as the .part; the first run
    against the real server then succeeds."""
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "1")
    monkeypatch.setenv("UPSCALE_DOWNLOAD_BACKOFF", "0")
    server.faults.html_page = True
    with pytest.raises(DownloadError):
        download.ensure_weights(served(weights, server), progress=False)
    part = cache / "weights" / weights.sha256 / (NAME + ".part")
    assert part.read_bytes() == HTML_PAGE
    server.faults.html_page = False
    assert download.ensure_weights(served(weights, server), progress=False).read_bytes() == data


# ---------------------------------------------------------------- issue 30: verify never follows (item 8)


def test_verify_never_reads_entries_that_are_not_regular_files(server, weights, generated_weights, cache, tmp_path):
    """Links (to /dev/zero, to a good file, dangling), a FIFO, a folder and a linked <sha256> folder:
    each is reported, none is read (the old code hashed /dev/zero for ever), links are removed (not
    what they point to), and the good file is still good. Through a subprocess: the old code hangs."""
    good = download.ensure_weights(served(weights, server), progress=False)
    folder = cache / "weights" / ("a" * 64)
    folder.mkdir()
    (folder / "zero.pb").symlink_to("/dev/zero")
    (folder / "dangling.pb").symlink_to(tmp_path / "nothing-here")
    (folder / "to-good.pb").symlink_to(good)
    os.mkfifo(folder / "fifo.pb")
    (folder / "sub.pb").mkdir()
    (cache / "weights" / ("b" * 64)).symlink_to("/dev", target_is_directory=True)
    env = {**os.environ, "UPSCALE_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-m", "upscale_cli", "models", "verify"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    lines = sorted(result.stderr.strip().splitlines())
    assert lines == sorted([
        f"not a regular file (a FIFO, removed): {folder / 'fifo.pb'}",
        f"not a regular file (a folder): {folder / 'sub.pb'}",
        f"not a regular file (a symbolic link to {tmp_path / 'nothing-here'}, removed): {folder / 'dangling.pb'}",
        f"not a regular file (a symbolic link to {good}, removed): {folder / 'to-good.pb'}",
        f"not a regular file (a symbolic link to /dev/zero, removed): {folder / 'zero.pb'}",
        f"not a regular file (a symbolic link to /dev, not a cache folder, removed): {cache / 'weights' / ('b' * 64)}",
    ])
    assert result.stdout.startswith("1 good, 0 corrupt, 6 not a regular file")
    assert good.is_file() and weights_cache.hash_file(good) == weights.sha256 and Path("/dev/zero").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["sub.pb"]


def test_clear_counts_links_without_following_them(server, weights, cache, tmp_path):
    download.ensure_weights(served(weights, server), progress=False)
    folder = cache / "weights" / ("a" * 64)
    folder.mkdir()
    (folder / "dangling.pb").symlink_to(tmp_path / "nothing-here")  # the old code: FileNotFoundError
    (folder / "zero.pb").symlink_to("/dev/zero")
    assert weights_cache.clear_cache() == (3, weights.size)
    assert Path("/dev/zero").exists()


class _OddHeaderServer(_EndlessServer):
    """Serves `body` with a Content-Length (or, answering a Range, a 206 whose Content-Range total) of
    Latin-1 byte 0xB2: '²' after decoding, which str.isdigit takes and int() refuses."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        from http.server import BaseHTTPRequestHandler

        from http_server import _QuietServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
                head = (f"HTTP/1.0 206 Partial Content\r\nContent-Range: bytes {start}-{len(body) - 1}/".encode()
                        + b"\xb2\r\n") if start else b"HTTP/1.0 200 OK\r\n"
                self.wfile.write(head + b"Content-Length: \xb2\r\n\r\n" + body[start:])

        self._httpd.server_close()
        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        import threading

        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)


@pytest.mark.parametrize("resume_from", [0, 1000])
def test_a_length_header_that_is_not_ascii_digits_is_ignored_not_a_traceback(resume_from, weights, data, cache):
    """Content-Length / Content-Range totals were read with str.isdigit, then int(): '²' (byte 0xB2)
    passed the first and crashed the second with a ValueError traceback. The size and hash checks
    still decide."""
    if resume_from:
        part = cache / "weights" / weights.sha256 / (NAME + ".part")
        part.parent.mkdir(parents=True)
        part.write_bytes(data[:resume_from])
    with _OddHeaderServer(data) as odd:
        path = download.ensure_weights(dataclasses.replace(weights, url=f"{odd.url}/{NAME}"), progress=False)
    assert path.read_bytes() == data
