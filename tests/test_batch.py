"""batch.py: inputs -> sources, output naming, skips and collisions (no model involved)."""
from pathlib import Path

import pytest

from upscale_cli.batch import Planned, Source, expand_inputs, plan_jobs, scale_tag
from upscale_cli.errors import InputNotFoundError, UsageError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_glob_and_file_inputs(tmp_path):
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "sub" / "b.jpg")
    notes = _touch(tmp_path / "in" / "notes.txt")
    flat = expand_inputs([str(tmp_path / "in")])
    assert [s.path for s in flat] == [a, notes]
    assert [s.ignored for s in flat] == [None, "not an image file name (.txt)"]  # reported, never read
    deep = expand_inputs([str(tmp_path / "in")], recursive=True)
    assert [s.path for s in deep if not s.ignored] == [a, b]
    globbed = expand_inputs([str(tmp_path / "in" / "**" / "*.jpg")])
    assert [s.path for s in globbed] == [b]
    assert expand_inputs(["-"])[0].path is None


def test_missing_inputs_are_clear(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such file"):
        expand_inputs([str(tmp_path / "nope.png")])
    with pytest.raises(InputNotFoundError, match="no files match"):
        expand_inputs([str(tmp_path / "*.webp")])
    with pytest.raises(InputNotFoundError, match="no image files"):
        expand_inputs([str(tmp_path)])


def test_a_missing_input_fails_alone(tmp_path):
    a = _touch(tmp_path / "a.png")
    sources = expand_inputs([str(a), str(tmp_path / "gone.png")])
    jobs = plan_jobs(sources, str(tmp_path / "out"), "x2")
    assert jobs[0].planned is None
    assert jobs[1].planned == Planned("failed", f"{tmp_path / 'gone.png'}: no such file or folder")


def test_default_names_next_to_input(tmp_path):
    a = _touch(tmp_path / "photo.jpg")
    (job,) = plan_jobs([Source(a)], None, "x4")
    assert job.output == tmp_path / "photo_x4.jpg"
    (job,) = plan_jobs([Source(a)], None, "x4", fmt="webp")
    assert job.output == tmp_path / "photo_x4.webp"


def test_folder_output_mirrors_subfolders(tmp_path):
    _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "sub" / "b.jpg")
    sources = expand_inputs([str(tmp_path / "in")], recursive=True)
    jobs = plan_jobs(sources, str(tmp_path / "out"), "x2", fmt="png")
    assert [j.output for j in jobs] == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.png"]


def test_single_file_output_is_a_file_unless_a_folder(tmp_path):
    a = _touch(tmp_path / "a.png")
    assert plan_jobs([Source(a)], str(tmp_path / "big.png"), "x2")[0].output == tmp_path / "big.png"
    (tmp_path / "outdir").mkdir()
    assert plan_jobs([Source(a)], str(tmp_path / "outdir"), "x2")[0].output == tmp_path / "outdir" / "a.png"


def test_never_overwrites_input_and_skips_existing(tmp_path):
    a = _touch(tmp_path / "a.png")
    (job,) = plan_jobs([Source(a)], str(a), "x2", overwrite=True)
    assert job.planned.status == "failed" and "overwrite the input" in job.planned.message
    out = _touch(tmp_path / "a_x2.png")
    (job,) = plan_jobs([Source(a)], None, "x2")
    assert job.planned.status == "skipped"
    (job,) = plan_jobs([Source(a)], None, "x2", overwrite=True)
    assert job.planned is None and job.output == out


def test_collisions_and_own_outputs(tmp_path):
    _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "in" / "c.png")
    _touch(tmp_path / "in" / "c_x2.png")  # written by an earlier run next to its input
    sources = expand_inputs([str(tmp_path / "in")])
    jobs = plan_jobs(sources, str(tmp_path / "out"), "x2", fmt="png")
    assert sum(1 for j in jobs if j.planned and "also be written" in j.planned.message) == 1
    jobs = {j.source.path.name: j for j in plan_jobs(sources, None, "x2")}
    assert jobs["c_x2.png"].planned == Planned("skipped", f"an earlier output of {tmp_path / 'in' / 'c.png'}; "
                                               "name it on the command line, or use -o, to upscale it as an input")
    assert jobs["c_x2.png"].output is None and jobs["c.png"].planned.status == "skipped"  # c_x2.png exists


# (names in the folder, the run's tag) -> the files left out as earlier outputs; every other file is an input
EARLIER_OUTPUTS = [
    (["photo_x4.png"], "x4", set()),  # its source is gone: an input like any other (issue #30, item 2)
    (["photo.png", "photo_x4.png"], "x4", {"photo_x4.png"}),
    (["photo.jpg", "photo_x4.png"], "x4", {"photo_x4.png"}),  # any readable suffix: the output may be PNG
    (["photo.GIF", "photo_x4.png"], "x4", {"photo_x4.png"}),
    (["photo.txt", "photo_x4.png"], "x4", set()),  # a .txt is no image to be made from
    (["photo.png", "photo_x2.png"], "x4", set()),  # another run's tag: an input of this one
    (["photo.png", "photo_x4_s2.png", "photo_x4_s10.png"], "x4", {"photo_x4_s2.png", "photo_x4_s10.png"}),
    (["photo_x4_s2.png"], "x4", set()),
    (["photo.png", "photo_1920w.png"], "1920w", {"photo_1920w.png"}),
    (["photo_1920w.png"], "1920w", set()),
    (["photo.png", "photo_restored.png", "photo_restored.txt"], "restored", {"photo_restored.png"}),
    (["photo_x4.png", "photo_x4_x4.png"], "x4", {"photo_x4_x4.png"}),  # a chain: made from photo_x4.png
    (["a_b.png", "a_b_x4.png", "a_x4.png"], "x4", {"a_b_x4.png"}),
]


@pytest.mark.parametrize("names,tag,left_out", EARLIER_OUTPUTS)
def test_an_earlier_output_is_left_out_only_beside_its_source_and_always_said(tmp_path, names, tag, left_out):
    """A folder's `photo_x4.png` is an earlier output only while an image `photo.*` is beside it;
    left out, it still has its job (skipped, saying of which file); without its source it runs."""
    for name in names:
        _touch(tmp_path / "in" / name)
    jobs = plan_jobs(expand_inputs([str(tmp_path / "in")]), None, tag)
    assert sorted(j.source.path.name for j in jobs) == sorted(names)  # nothing dropped
    earlier = {j.source.path.name for j in jobs if j.planned and "an earlier output of" in j.planned.message}
    assert earlier == left_out
    for job in jobs:
        if job.source.path.name in left_out:
            assert job.planned.status == "skipped" and job.output is None
        elif not job.source.ignored:
            assert job.planned is None or job.planned.message.startswith("output exists")
            assert job.output.name.startswith(job.source.path.stem + f"_{tag}")
    # named on the command line, or written elsewhere with -o: every image is an input
    named = plan_jobs(expand_inputs([str(tmp_path / "in" / n) for n in names]), None, tag)
    assert not any(j.planned and "earlier output" in j.planned.message for j in named)
    elsewhere = plan_jobs(expand_inputs([str(tmp_path / "in")]), str(tmp_path / "out"), tag)
    assert not any(j.planned and "earlier output" in j.planned.message for j in elsewhere)


def test_an_earlier_output_is_replaceable_with_overwrite_but_never_an_input(tmp_path):
    """Left out as an input, an earlier output is not protected as one: --overwrite replaces it."""
    src, earlier = _touch(tmp_path / "in" / "photo.png"), _touch(tmp_path / "in" / "photo_x4.png")
    jobs = {j.source.path: j for j in plan_jobs(expand_inputs([str(tmp_path / "in")]), None, "x4", overwrite=True)}
    assert jobs[src].planned is None and jobs[src].output == earlier
    assert jobs[earlier].planned.status == "skipped"


def test_stdout_takes_one_input(tmp_path):
    a, b = _touch(tmp_path / "a.png"), _touch(tmp_path / "b.png")
    with pytest.raises(UsageError):
        plan_jobs([Source(a), Source(b)], "-", "x2")
    assert plan_jobs([Source(a)], "-", "x2")[0].output is None


def test_scale_tag():
    assert scale_tag(4, None, None, 4) == "x4"
    assert scale_tag(1.5, None, None, 4) == "x1.5"
    assert scale_tag(None, None, None, 2) == "x2"
    assert scale_tag(None, 1920, None, 4) == "1920w"
    assert scale_tag(None, 100, 50, 4) == "100x50"


def test_a_target_is_never_any_input_of_the_run(tmp_path):
    """Issue 11.1: s/good.jpg -> s/good.png would replace the other input s/good.png."""
    png, jpg = _touch(tmp_path / "s" / "good.png"), _touch(tmp_path / "s" / "good.jpg")
    jobs = {j.source.path: j for j in plan_jobs(expand_inputs([str(tmp_path / "s")]), str(tmp_path / "s"), "x4",
                                                  fmt="png", overwrite=True)}
    assert jobs[jpg].planned.status == "failed"
    assert str(jpg) in jobs[jpg].planned.message and str(png) in jobs[jpg].planned.message
    assert jobs[png].planned.status == "failed" and "overwrite the input itself" in jobs[png].planned.message


def test_a_default_name_that_is_another_input_fails_that_file_only(tmp_path):
    jpg, earlier = _touch(tmp_path / "good.jpg"), _touch(tmp_path / "good_x4.png")
    jobs = plan_jobs(expand_inputs([str(jpg), str(earlier)]), None, "x4", fmt="png", overwrite=True)
    assert jobs[0].output == earlier and jobs[0].planned.status == "failed"
    assert str(earlier) in jobs[0].planned.message
    assert jobs[1].planned is None and jobs[1].output == tmp_path / "good_x4_x4.png"


@pytest.mark.parametrize("link", ["symlink", "hardlink", "symlinked_folder"])
def test_another_name_for_an_input_is_that_input(tmp_path, link):
    """b.jpg's default output b_x2.jpg is another name for the input a.png: it must not be written."""
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "b.jpg")
    if link == "symlink":
        (tmp_path / "in" / "b_x2.jpg").symlink_to(a)
        sources = [Source(b), Source(a)]
    elif link == "hardlink":
        (tmp_path / "in" / "b_x2.jpg").hardlink_to(a)
        sources = [Source(b), Source(a)]
    else:  # the same input reached through a linked folder
        (tmp_path / "alias").symlink_to(tmp_path / "in")
        a_alias = _touch(tmp_path / "in" / "b_x2.jpg")
        sources = [Source(b), Source(tmp_path / "alias" / a_alias.name)]
    first = plan_jobs(sources, None, "x2", overwrite=True)[0]
    assert first.planned.status == "failed" and "would overwrite the input" in first.planned.message
    # without the other input in the run, replacing that file is an ordinary --overwrite
    (alone,) = plan_jobs([Source(b)], None, "x2", overwrite=True)
    assert alone.planned is None


def test_a_single_output_path_that_names_an_input_through_dots(tmp_path):
    a = _touch(tmp_path / "in" / "a.png")
    (job,) = plan_jobs([Source(a)], str(tmp_path / "in" / "." / ".." / "in" / "a.png"), "x2", overwrite=True)
    assert job.planned.status == "failed" and str(a) in job.planned.message


def test_collision_message_names_both_inputs_and_fits_the_output_kind(tmp_path):
    _touch(tmp_path / "in" / "a.png")
    _touch(tmp_path / "in" / "a.jpg")
    jobs = plan_jobs(expand_inputs([str(tmp_path / "in")]), str(tmp_path / "out"), "x2", fmt="png")
    (failed,) = [j for j in jobs if j.planned]
    other = ({"a.png", "a.jpg"} - {failed.source.path.name}).pop()
    assert str(failed.source.path) in failed.planned.message and other in failed.planned.message
    assert "use -o with a folder" not in failed.planned.message


def test_shards_are_disjoint_complete_and_stable(tmp_path):
    """--shard K/N: by the path relative to the folder argument, so every machine (the folder
    mounted anywhere) takes the same part, parts never overlap, and together they are everything."""
    from upscale_cli.batch import in_shard, parse_shard, select_shard, shard_key

    names = [f"d{i % 3}/img{i:03d}.png" for i in range(60)]
    for name in names:
        _touch(tmp_path / "a" / "in" / name)
        _touch(tmp_path / "b" / "mount" / name)
    here = plan_jobs(expand_inputs([str(tmp_path / "a" / "in")], recursive=True), str(tmp_path / "out"), "x2")
    there = plan_jobs(expand_inputs([str(tmp_path / "b" / "mount")], recursive=True), str(tmp_path / "o2"), "x2")
    parts = [select_shard(here, (k, 4)) for k in range(4)]
    keys = [[shard_key(job.source) for job in part] for part in parts]
    assert sorted(sum(keys, [])) == sorted(names)  # complete, and disjoint (no key twice)
    assert all(5 <= len(part) <= 25 for part in parts)  # roughly even
    for k in range(4):  # the same files wherever the folder is
        assert [shard_key(j.source) for j in select_shard(there, (k, 4))] == keys[k]
    assert select_shard(here, None) == here
    assert select_shard(here, (0, 1)) == here
    _touch(tmp_path / "a" / "in" / "new.png")  # a new file moves no other
    grown = plan_jobs(expand_inputs([str(tmp_path / "a" / "in")], recursive=True), str(tmp_path / "out"), "x2")
    assert [shard_key(j.source) for j in select_shard(grown, (1, 4)) if j.source.path.name != "new.png"] == keys[1]
    assert parse_shard("2/8") == (2, 8) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1", "a/b", "-1/3", "1/0", ""):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)
    assert in_shard(Source(None), (0, 1))
