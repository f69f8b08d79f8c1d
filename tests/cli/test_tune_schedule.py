"""`vmddpm-deploy tune-schedule` and `sample --timesteps`: the file, its use, and one line per bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.runner import error_line, invoke
from vmddpm_deploy.diffusion.schedule_file import TunedSchedule, read_schedule
from vmddpm_deploy.digests import sha256_file


def _tune(micro_ckpt, path, *extra):
    return invoke("tune-schedule", micro_ckpt, "--nfe", 3, "-o", path, "--trajectories", 3, "--teacher-steps", 10,
                  "--batch-size", 2, *extra)


@pytest.fixture
def schedule_file(tmp_path, micro_ckpt):
    path = tmp_path / "schedule.json"
    result = _tune(micro_ckpt, path)
    assert result.exit_code == 0, result.output
    return path


def test_tune_schedule_writes_a_schedule_on_the_teachers_grid(schedule_file, micro_ckpt):
    tuned = read_schedule(schedule_file)
    assert tuned.nfe == 3 and tuned.source_sha256 == sha256_file(micro_ckpt)
    assert tuned.timesteps[0] == 900 and all(t % 100 == 0 for t in tuned.timesteps)  # DDIM 10's leading grid
    assert tuned.teacher == {"sampler": "ddim", "steps": 10, "spacing": "leading", "eta": 0.0}
    assert tuned.trajectories == 3 and tuned.cost > 0 and tuned.final_mse >= 0


def test_tune_schedule_refuses_an_existing_output_unless_forced(schedule_file, micro_ckpt):
    before = schedule_file.read_text()
    refused = _tune(micro_ckpt, schedule_file)
    assert refused.exit_code == 5 and "--force" in error_line(refused)
    assert schedule_file.read_text() == before
    assert _tune(micro_ckpt, schedule_file, "--force", "--quiet").exit_code == 0


def test_tune_schedule_quiet_prints_the_file(tmp_path, micro_ckpt):
    path = tmp_path / "s.json"
    result = _tune(micro_ckpt, path, "--quiet")
    assert result.exit_code == 0
    assert json.loads(result.output) == json.loads(path.read_text())


@pytest.mark.parametrize(
    "args,phrase",
    [(["--nfe", "11"], "--nfe must be in [1, 10]"), (["--trajectories", "0"], "--trajectories must be at least 1"),
     (["--batch-size", "0"], "--batch-size must be at least 1")],
)
def test_tune_schedule_bad_arguments_are_one_line(tmp_path, micro_ckpt, args, phrase):
    result = invoke("tune-schedule", micro_ckpt, "-o", tmp_path / "s.json", "--teacher-steps", 10, "--nfe", 3, *args)
    assert result.exit_code == 2 and phrase in error_line(result)
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("sampler", ["ddim", "ddim-ab2", "dpm-solver++"])
def test_sample_runs_at_the_files_timesteps_and_equals_the_same_list_given_by_hand(tmp_path, micro_ckpt, sampler):
    # A file listing the timesteps a placement gives must give that placement's images.
    from vmddpm_deploy.diffusion import NoiseSchedule, make_sampler

    placed = make_sampler(sampler, NoiseSchedule(), 4, spacing="quadratic").timesteps
    path = TunedSchedule(placed, 1000, sha256_file(micro_ckpt)).write(tmp_path / "s.json")
    images = {}
    for name, args in {"file": ["--timesteps", path], "spacing": ["--steps", 4, "--spacing", "quadratic"]}.items():
        out = tmp_path / name
        result = invoke("sample", micro_ckpt, "--n", 2, "--sampler", sampler, "--format", "npz", "--out", out, *args)
        assert result.exit_code == 0, result.output
        images[name] = np.load(out / "samples.npz")["images"]
    np.testing.assert_array_equal(images["file"], images["spacing"])
    settings = json.loads((tmp_path / "file" / "progress.json").read_text())["settings"]
    assert settings["timesteps"] == list(placed) and settings["spacing"] is None and settings["steps"] == 4


def test_resume_refuses_other_timesteps(tmp_path, micro_ckpt, schedule_file):
    out = tmp_path / "o"
    args = ("sample", micro_ckpt, "--n", 2, "--out", out)
    assert invoke(*args, "--timesteps", schedule_file).exit_code == 0
    other = TunedSchedule((800, 300, 0), 1000, "c" * 64).write(tmp_path / "other.json")
    changed = invoke(*args, "--timesteps", other, "--resume")
    assert changed.exit_code == 2 and "--timesteps was [" in changed.output
    assert invoke(*args, "--timesteps", schedule_file, "--resume").exit_code == 0


@pytest.mark.parametrize(
    "args,phrase",
    [(["--spacing", "quadratic"], "--timesteps and --spacing both place the timesteps"),
     (["--steps", "5"], "--steps 5 conflicts with --timesteps"),
     (["--scheduler", "diffusers:DDIMScheduler"], "--timesteps applies to our samplers")],
)
def test_sample_conflicting_placement_is_one_line(tmp_path, micro_ckpt, schedule_file, args, phrase):
    if "--scheduler" in args:
        pytest.importorskip("diffusers")
    result = invoke("sample", micro_ckpt, "--timesteps", schedule_file, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2 and phrase in error_line(result)
    assert not (tmp_path / "o").exists()


def test_sample_with_a_bad_schedule_file_is_one_line(tmp_path, micro_ckpt):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "vmddpm-deploy-timesteps/1", "timesteps": [0, 500], "nfe": 2,
                                "num_train_timesteps": 1000, "source_sha256": "d" * 64}))
    result = invoke("sample", micro_ckpt, "--timesteps", path, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "distinct and descending" in error_line(result)


def test_a_schedule_tuned_for_another_model_runs_with_a_note(tmp_path, micro_ckpt):
    path = TunedSchedule((900, 400, 0), 1000, "e" * 64).write(tmp_path / "s.json")
    result = invoke("sample", micro_ckpt, "--n", 1, "--timesteps", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "note: --timesteps" in result.output and "tuned for another model" in result.output


def test_export_records_the_files_timesteps_in_the_manifest(tmp_path, micro_ckpt, schedule_file):
    from vmddpm_deploy.export.manifest import read_manifest

    out = tmp_path / "export"
    result = invoke("export", micro_ckpt, "-o", out, "--ops", "portable", "--dtype", "fp32", "--timesteps", schedule_file,
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert read_manifest(out).timesteps == read_schedule(schedule_file).timesteps
    assert "tuned for another model" not in result.output


def test_export_with_a_bad_schedule_file_is_one_line_and_writes_nothing(tmp_path, micro_ckpt):
    path = tmp_path / "bad.json"
    path.write_text("[]")
    result = invoke("export", micro_ckpt, "-o", tmp_path / "export", "--timesteps", path)
    assert result.exit_code == 2 and "is not a vmddpm-deploy-timesteps/1 file" in error_line(result)
    assert not (tmp_path / "export").exists()


def test_sample_of_an_export_runs_at_its_manifests_timesteps_unless_a_placement_is_asked_for(
    tmp_path, micro_ckpt, schedule_file
):
    export_dir = tmp_path / "export"
    result = invoke("export", micro_ckpt, "-o", export_dir, "--ops", "portable", "--dtype", "fp32", "--timesteps",
                    schedule_file, "--quiet")
    assert result.exit_code == 0, result.output
    listed = list(read_schedule(schedule_file).timesteps)
    result = invoke("sample", export_dir, "--n", 1, "--out", tmp_path / "manifest")
    assert result.exit_code == 0, result.output
    assert "the export's manifest lists" in result.output
    settings = json.loads((tmp_path / "manifest" / "progress.json").read_text())["settings"]
    assert settings["timesteps"] == listed and settings["steps"] == len(listed)
    for args in (["--steps", 3], ["--spacing", "leading"]):
        result = invoke("sample", export_dir, "--n", 1, "--out", tmp_path / str(args[0]), *args)
        assert result.exit_code == 0, result.output
        assert "the export's manifest lists" not in result.output
        settings = json.loads((tmp_path / str(args[0]) / "progress.json").read_text())["settings"]
        assert settings["timesteps"] is None
