"""The community catalogue: well-known models by name, the OpenModelDB snapshot and search,
`-m openmodeldb:ID` downloaded from a real HTTP server on 127.0.0.1, and `upscale models add`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import community_factory as cf
import numpy as np
import pytest
from http_server import FileServer
from PIL import Image
from typer.testing import CliRunner

from upscale_cli import openmodeldb
from upscale_cli.catalog import load_catalog
from upscale_cli.cli import app

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared"
WELL_KNOWN = ["realesrgan-x4plus", "realesrgan-x2plus", "realesrgan-x4plus-anime", "realesr-general-x4v3",
              "realesr-animevideov3", "swinir-classical-x2", "swinir-classical-x4", "swinir-real-x4",
              "hat-s-nomos8k-x4", "span-x4", "dejpeg-x1", "denoise-x1"]


@pytest.fixture(autouse=True)
def _fresh_cache(cache):
    """Every test here gets conftest's empty weights cache under tmp."""
    return cache


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _photo(folder: Path) -> Path:
    yy, xx = np.mgrid[0:23, 0:31]
    array = (127 + 100 * np.sin(0.4 * xx[..., None] + 0.3 * yy[..., None] + np.arange(3))).astype(np.uint8)
    Image.fromarray(array).save(folder / "photo.png")
    return folder / "photo.png"


def test_well_known_models_are_in_the_catalogue_with_their_facts():
    catalog, snap = load_catalog(), openmodeldb.snapshot()
    for name in WELL_KNOWN:
        spec = catalog[name]
        assert spec.arch == "spandrel" and spec.license and spec.description
        (file,) = spec.files.values()
        assert file.url.startswith("https://") and openmodeldb.is_direct(file.url)
        model = openmodeldb.find_by_sha256(file.sha256)  # the snapshot's facts, not hand-copied
        assert model is not None and model.license == spec.license and model.scale == file.scale
        assert any(f.sha256 == file.sha256 and f.size == file.size for f in snap[model.id].files)
    assert catalog["realesr-general-x4v3"].files[4].sha256 == \
        "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"  # shared/weights/community/SOURCES.md


def test_models_list_shows_licence_and_whether_downloaded():
    result = runner.invoke(app, ["models", "--json"])
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["realesrgan-x4plus"]["license"] == "BSD-3-Clause"
    assert rows["realesrgan-x4plus"]["offline"] == "not cached"


def test_search_filters_and_says_how_to_run_or_fetch():
    result = runner.invoke(app, ["models", "search", "anime", "--scale", "2"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "arch", "scale", "size", "license", "download"]
    assert all(" x2 " in line for line in lines[1:]) and len(lines) > 10
    assert any("by hand" in line for line in lines) and any("openmodeldb:" in line for line in lines)
    assert any("CC-BY-NC" in line for line in lines)  # licences are shown
    rows = [json.loads(line) for line in runner.invoke(app, ["models", "search", "--arch", "swinir", "--json"]).stdout.splitlines()]
    assert rows and all(r["architecture"] == "swinir" for r in rows)
    tagged = [json.loads(line) for line in runner.invoke(app, ["models", "search", "--tag", "jpeg", "--json"]).stdout.splitlines()]
    assert tagged and all("jpeg" in r["tags"] for r in tagged)
    none = runner.invoke(app, ["models", "search", "no-such-model-anywhere"])
    assert none.exit_code == 1 and "no OpenModelDB model matches" in none.stderr


def _fake_snapshot(monkeypatch, models: list[dict]) -> None:
    """The snapshot with models whose files this test made and serves (real sha256 and sizes)."""
    snap = {m["id"]: openmodeldb._model(m) for m in models}
    monkeypatch.setattr(openmodeldb, "snapshot", lambda: snap)


def test_openmodeldb_model_downloads_verifies_and_runs(tmp_path, monkeypatch, cache):
    served = tmp_path / "served"
    served.mkdir()
    path, _ = cf.compact(served, "4x-test-compact.pth")
    with FileServer(served) as server:
        _fake_snapshot(monkeypatch, [{"id": "4x-Test-Compact", "name": "Test", "author": "us", "license": "CC-BY-NC-4.0",
                                      "architecture": "compact", "scale": 4, "tags": ["photo"],
                                      "resources": [{"type": "pth", "size": path.stat().st_size, "sha256": _sha(path),
                                                     "urls": ["https://mega.nz/#!nothing", f"{server.url}/4x-test-compact.pth"]}]}])
        photo = _photo(tmp_path)
        result = runner.invoke(app, [str(photo), "-m", "openmodeldb:4x-Test-Compact", "-o", str(tmp_path / "a.png")])
        assert result.exit_code == 0, result.output
        assert "not for commercial use" in result.stderr  # said when it is first downloaded
        assert [r.path for r in server.requests] == ["/4x-test-compact.pth"]
        direct = runner.invoke(app, [str(photo), "-m", str(path), "-o", str(tmp_path / "b.png")])
        assert direct.exit_code == 0
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
        again = runner.invoke(app, [str(photo), "-m", "openmodeldb:4x-Test-Compact", "-o", str(tmp_path / "c.png")])
        assert again.exit_code == 0 and len(server.requests) == 1 and "commercial" not in again.stderr  # cached


def test_a_by_hand_model_says_where_then_models_add_makes_it_run(tmp_path, monkeypatch, cache):
    path, _ = cf.compact(tmp_path, "downloaded-by-hand.pth", scale=2)
    _fake_snapshot(monkeypatch, [{"id": "2x-Hand", "name": "Hand", "author": "them", "license": "CC0-1.0",
                                  "architecture": "compact", "scale": 2, "tags": [],
                                  "resources": [{"type": "pth", "size": path.stat().st_size, "sha256": _sha(path),
                                                 "urls": ["https://drive.google.com/file/d/xyz/view"]}]}])
    photo = _photo(tmp_path)
    before = runner.invoke(app, [str(photo), "-m", "openmodeldb:2x-Hand"])
    assert before.exit_code == 2 and "by hand" in before.stderr and _sha(path) in before.stderr
    added = runner.invoke(app, ["models", "add", str(path)])
    assert added.exit_code == 0, added.output
    assert "openmodeldb:2x-Hand" in added.stdout and path.is_file()  # the user's file is only read
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    after = runner.invoke(app, [str(photo), "-m", "openmodeldb:2x-Hand", "-o", str(tmp_path / "out.png")])
    assert after.exit_code == 0, after.output
    assert Image.open(tmp_path / "out.png").size == (62, 46)


def test_models_add_refuses_an_unknown_file_in_one_line(tmp_path):
    path, _ = cf.compact(tmp_path, "mine.pth")
    result = runner.invoke(app, ["models", "add", str(path), str(tmp_path / "missing.pth")])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "matches no catalogue or OpenModelDB file" in lines[0] and "no such file" in lines[1]


@pytest.mark.skipif(not (SHARED / "weights" / "community" / "realesr-general-x4v3.pth").is_file(),
                    reason="needs ../shared/weights/community (the published file)")
def test_models_add_recognises_the_published_file_and_it_runs_by_name_offline(tmp_path, monkeypatch):
    published = SHARED / "weights" / "community" / "realesr-general-x4v3.pth"
    added = runner.invoke(app, ["models", "add", str(published)])
    assert added.exit_code == 0 and "realesr-general-x4v3 x4 (BSD-3-Clause)" in added.stdout
    monkeypatch.setenv("UPSCALE_OFFLINE", "1")
    result = runner.invoke(app, [str(_photo(tmp_path)), "-m", "realesr-general-x4v3", "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output


def test_unknown_openmodeldb_id_suggests_close_ones(tmp_path):
    result = runner.invoke(app, [str(_photo(tmp_path)), "-m", "openmodeldb:4x-realesrgan-x4plu"])
    assert result.exit_code == 2 and "did you mean 4x-realesrgan-x4plus" in result.stderr
