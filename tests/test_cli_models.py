"""`upscale models ...` through the real Typer app (CliRunner), with a real HTTP mirror on 127.0.0.1.

Downloads use the generated catalogue entries of conftest.py (files made by the tests, with their real
sha256 and size), so these tests need no ../shared; the real entries are used where nothing is fetched."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import RANDOM_MODEL, RANDOM_SMALL_MODEL
from http_server import FileServer
from upscale_cli import weights_cache
from upscale_cli.catalog import load_catalog
from upscale_cli.cli import app

pytestmark = pytest.mark.usefixtures("cache", "generated_catalogue")
ESPCN = load_catalog()["opencv-espcn"]  # the real entry, for the tests that fetch nothing


@pytest.fixture
def model(generated_weights):
    """The generated three-scale entry the download tests fetch (x2, x3, x4)."""
    return generated_weights.specs[RANDOM_MODEL]


@pytest.fixture
def mirror(generated_weights, monkeypatch):
    with FileServer(generated_weights.folder) as server:
        monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", server.url)
        yield server


def run(*args: str):
    return CliRunner().invoke(app, ["models", *args])


def test_list_shows_models_and_status():
    result = run()
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "any" in lines["bicubic"] and "built in" in lines["bicubic"]
    assert "x2, x3, x4" in lines["opencv-espcn"] and "Apache-2.0" in lines["opencv-espcn"]
    assert "not cached" in lines["opencv-espcn"]
    assert run("list").stdout == result.stdout


def test_list_json(mirror, model):
    assert run("download", RANDOM_MODEL, "-x", "2").exit_code == 0
    records = {r["name"]: r for r in json.loads(run("--json").stdout)}
    assert records["bicubic"]["scales"] == [] and records["bicubic"]["offline"] == "built in"
    assert records["opencv-espcn"]["scales"] == [2, 3, 4] and records["opencv-espcn"]["offline"] == "not cached"
    generated = records[RANDOM_MODEL]
    assert generated["scales"] == [2, 3, 4] and generated["size"] == sum(f.size for f in model.files.values())
    assert generated["offline"] == "cached x2"
    assert [f["cached"] for f in generated["files"]] == [True, False, False]


def test_download_with_mirror_then_path(mirror, cache, model):
    result = run("download", RANDOM_MODEL)
    assert result.exit_code == 0, result.output
    paths = [weights_cache.cached_path(f) for f in model.files.values()]
    assert result.stdout.split() == [str(p) for p in paths]
    assert all(p.is_file() for p in paths)
    assert f"downloading {model.files[2].filename}" in result.stderr  # plain progress lines off a terminal
    assert run("path", RANDOM_MODEL, "-x", "3").stdout.strip() == str(paths[1])
    assert run("path", RANDOM_MODEL).stdout.split() == [str(p) for p in paths]
    assert "cached" in run("list").stdout.split(RANDOM_MODEL + " ", 1)[1].splitlines()[0]


def test_download_quiet_and_cache_hit(mirror):
    assert run("download", RANDOM_SMALL_MODEL, "-x", "2", "--quiet").stderr == ""
    assert run("download", RANDOM_SMALL_MODEL, "-x", "2").exit_code == 0
    assert len(mirror.requests) == 1


def test_download_keeps_going_after_a_bad_name(mirror, generated_catalogue):
    result = run("download", "no-such-model", RANDOM_SMALL_MODEL, "-x", "2", "-q")
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.stderr
    assert weights_cache.is_cached(generated_catalogue[RANDOM_SMALL_MODEL].files[2])


def test_download_errors_are_one_line(mirror, model):
    mirror.faults.status = 404
    result = run("download", RANDOM_MODEL, "-x", "2", "-q")
    assert result.exit_code == 1
    file = model.files[2]
    expected = (f"error: HTTP 404 Not Found from {mirror.url}/{file.filename}; download {file.url} another way, "
                f"then run `upscale models add FILE` (or save it as {weights_cache.cached_path(file)})")
    assert result.stderr.strip().splitlines() == [expected]
    assert "Traceback" not in result.output


def test_download_unknown_model_and_bad_scale():
    result = run("download", "opencv-espcnn")
    assert result.exit_code == 2 and "did you mean opencv-espcn" in result.stderr
    result = run("path", "opencv-espcn", "-x", "8")
    assert result.exit_code == 2 and "has no x8 weights" in result.stderr
    assert run("download").exit_code == 2


def test_download_offline_cold_cache(monkeypatch):
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    result = run("download", "opencv-espcn", "-x", "2")
    assert result.exit_code == 1
    assert ESPCN.files[2].url in result.stderr and str(weights_cache.cached_path(ESPCN.files[2])) in result.stderr
    assert "`upscale models add FILE`" in result.stderr


def test_path_of_uncached_and_builtin_models():
    result = run("path", "opencv-espcn", "-x", "2")
    assert result.exit_code == 1 and "not cached; run `upscale models download opencv-espcn`" in result.stderr
    result = run("path", "bicubic")
    assert result.exit_code == 1 and "no weights file" in result.stderr


def test_verify_detects_and_removes_corrupt_file(mirror, model):
    assert run("download", RANDOM_MODEL, "-x", "2", "-q").exit_code == 0
    assert run("download", RANDOM_MODEL, "-x", "3", "-q").exit_code == 0
    assert run("verify").exit_code == 0
    bad = weights_cache.cached_path(model.files[3])
    bad.write_bytes(b"\0" * bad.stat().st_size)
    result = run("verify")
    assert result.exit_code == 1
    assert f"corrupt (removed): {bad}" in result.stderr and "1 good, 1 corrupt" in result.stdout
    assert not bad.exists() and weights_cache.cached_path(model.files[2]).exists()
    assert run("verify").exit_code == 0


def test_clear(mirror, cache, model):
    assert model.files[2].size == 90_000
    assert run("download", RANDOM_MODEL, "-x", "2", "-q").exit_code == 0
    result = run("clear")
    assert result.exit_code == 0 and "removed 1 file(s), 90.0 KB" in result.stdout
    assert not weights_cache.is_cached(model.files[2])
    assert run("clear").exit_code == 0  # clearing an empty cache is fine


# ---------------------------------------------------------------- issue 11.5 through the command


@pytest.mark.parametrize("name,value", [("UPSCALE_DOWNLOAD_RETRIES", "-5"), ("UPSCALE_DOWNLOAD_TIMEOUT", "0"),
                                        ("UPSCALE_DOWNLOAD_BACKOFF", "nan"), ("UPSCALE_OFFLINE", "maybe"),
                                        ("UPSCALE_WEIGHTS_MIRROR", "ftp://example.com/")])
def test_bad_environment_is_one_line_naming_it(name, value, mirror, monkeypatch):
    monkeypatch.setenv(name, value)
    result = run("download", RANDOM_MODEL, "-x", "2")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {name} must be") and repr(value) in result.stderr
    assert "Traceback" not in result.output and mirror.requests == []


def test_short_file_says_wrong_size_and_url(tmp_path, monkeypatch, cache, generated_weights):
    name = generated_weights.file().filename
    assert generated_weights.file().size == 90_000
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / name).write_bytes(generated_weights.data()[:50_000])
    with FileServer(folder) as server:
        monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", server.url)
        result = run("download", RANDOM_MODEL, "-x", "2")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"downloading {name}") and len(lines) == 2  # no "downloaded" line
    assert lines[1] == (f"error: {name} from {server.url}/{name} is 50,000 bytes, but the catalogue says "
                        "90,000; the download was deleted")
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no .part, no .lock


def test_unsafe_catalogue_is_one_line(monkeypatch):
    from upscale_cli import catalog

    text = catalog.resources.files("upscale_cli").joinpath("weights.toml").read_text(encoding="utf-8")
    crafted = text.replace('filename = "ESPCN_x2.pb"', 'filename = "../../../../tmp/x.pb"')
    monkeypatch.setattr(catalog, "load_catalog", lambda: catalog.parse_catalog(crafted))
    result = run("download", "opencv-espcn", "-x", "2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == ("error: weights.toml: model 'opencv-espcn', file x2: filename must be a bare file "
                                     "name with no folder, not '../../../../tmp/x.pb'")


# ---------------------------------------------------------------- issue 30, items 15 and 11 through the command


def test_download_goes_on_after_a_failed_file_and_reports_each(mirror, model, generated_catalogue):
    """A B with A's first file failing: A's other files and B are still fetched (the old code went
    on to B, but skipped A's x3 and x4 without a word); one line per failure, then a count, exit 1."""
    mirror.faults.status, mirror.faults.status_times = 404, 1
    result = run("download", RANDOM_MODEL, RANDOM_SMALL_MODEL, "-q")
    assert result.exit_code == 1
    fetched = [model.files[3], model.files[4], generated_catalogue[RANDOM_SMALL_MODEL].files[2]]
    assert result.stdout.split() == [str(weights_cache.cached_path(f)) for f in fetched]
    assert all(weights_cache.is_cached(f) for f in fetched) and not weights_cache.is_cached(model.files[2])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: HTTP 404 Not Found from {mirror.url}/{model.files[2].filename}")
    assert lines[1] == "1 of 4 downloads failed"


def test_download_of_many_with_every_file_failing_reports_each(monkeypatch, model):
    from http_server import free_port

    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "0")
    result = run("download", RANDOM_MODEL, "no-such-model", RANDOM_SMALL_MODEL, "-q")
    assert result.exit_code == 2  # the unknown name is a usage error; the others failed
    lines = result.stderr.strip().splitlines()
    names = [model.files[s].filename for s in (2, 3, 4)] + ["no-such-model", f"{RANDOM_SMALL_MODEL}_x2.pb"]
    assert len(lines) == 6 and all(name in line for name, line in zip(names, lines)) and lines[5] == "5 of 5 downloads failed"


@pytest.mark.parametrize("where", ["connection refused", "no such host"])
def test_unreachable_host_says_how_to_add_the_file_by_hand(where, monkeypatch, model):
    from http_server import free_port

    host = f"127.0.0.1:{free_port()}" if where == "connection refused" else "no-such-host.invalid"
    monkeypatch.setenv("UPSCALE_WEIGHTS_MIRROR", f"http://{host}")
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "0")
    result = run("download", RANDOM_MODEL, "-x", "2", "-q")
    assert result.exit_code == 1
    file = model.files[2]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: could not download http://{host}/{file.filename}: ")
    assert line.endswith(f"; download {file.url} another way, then run `upscale models add FILE` "
                         f"(or save it as {weights_cache.cached_path(file)})")


def test_html_part_then_a_good_server_succeeds_on_the_first_run(mirror, model, monkeypatch):
    """The issue's recipe: a run that met a portal's HTML page (no Content-Length) leaves it as the
    .part; the next run, against the real server, succeeds (the old code failed it once more)."""
    monkeypatch.setenv("UPSCALE_DOWNLOAD_RETRIES", "0")
    file = model.files[2]
    part = weights_cache.part_path(weights_cache.cached_path(file))
    mirror.faults.html_page = True
    assert run("download", RANDOM_MODEL, "-x", "2", "-q").exit_code == 1
    assert part.read_bytes().startswith(b"<!DOCTYPE html>")
    mirror.faults.html_page = False
    result = run("download", RANDOM_MODEL, "-x", "2", "-q")
    assert result.exit_code == 0, result.stderr
    assert weights_cache.hash_file(weights_cache.cached_path(file)) == file.sha256 and not part.exists()


# ---------------------------------------------------------------- issue 30, item 8: models add reads only regular files


@pytest.mark.parametrize("kind", ["character device", "FIFO", "folder", "link to a device"])
def test_add_reads_only_regular_files(kind, tmp_path):
    import os

    what = {"character device": "a character device", "FIFO": "a FIFO", "folder": "a folder",
            "link to a device": "a symbolic link to /dev/zero"}[kind]
    path = {"character device": "/dev/zero", "FIFO": str(tmp_path / "fifo"), "folder": str(tmp_path),
            "link to a device": str(tmp_path / "link")}[kind]
    if kind == "FIFO":
        os.mkfifo(path)
    if kind == "link to a device":
        os.symlink("/dev/zero", path)
    result = run("add", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {path}: not a regular file ({what})"
