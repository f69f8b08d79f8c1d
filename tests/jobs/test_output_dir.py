"""Sampling jobs on disk: shard invariance, exact resume after a kill, refused resumes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from tests.jobs.conftest import SHAPE
from vmddpm_deploy.checkpoint import init_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import InvalidArgumentError, OutputError
from vmddpm_deploy.jobs.output_dir import OutputDir
from vmddpm_deploy.jobs.sampling import sample_shard
from vmddpm_deploy.jobs.spec import JobSettings, Shard
from vmddpm_deploy.runtime.arithmetic import Arithmetic


def settings(
    n=5, image_format="npz", shard: Shard | None = None, steps=4, batch_size=2, micro_batch=2, device="cpu AVX512",
) -> JobSettings:
    arithmetic = Arithmetic("torch", "torch (test)", device, "fp32", micro_batch)
    return JobSettings("f" * 64, n, "ddim", steps, 0.5, 11, image_format, shard or Shard(), batch_size, arithmetic=arithmetic)


def run(out, denoiser, sampler, resume=False, **kwargs):
    return sample_shard(OutputDir(out, settings(**kwargs), resume=resume), denoiser, sampler, SHAPE)


def load_npz(path):
    with np.load(path) as data:
        return data["indices"], data["images"].astype(np.int64)


def test_shards_of_another_batch_size_give_the_full_runs_bytes(tmp_path, denoiser, sampler):
    """The calls have the micro-batch's rows whatever the batch size, so the batch size changes no byte."""
    run(tmp_path / "full", denoiser, sampler, batch_size=5)
    for index, batch_size in ((0, 3), (1, 1)):
        run(tmp_path / "sharded", denoiser, sampler, batch_size=batch_size, shard=Shard(index, 2))
    full_indices, full = load_npz(tmp_path / "full" / "samples.npz")
    i0, a = load_npz(tmp_path / "sharded" / "samples.shard-0-of-2.npz")
    i1, b = load_npz(tmp_path / "sharded" / "samples.shard-1-of-2.npz")
    assert i0.tolist() == [0, 2, 4] and i1.tolist() == [1, 3]
    merged = np.empty_like(full)
    merged[i0], merged[i1] = a, b
    assert full_indices.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(merged, full)
    assert not (tmp_path / "sharded" / ".parts").exists() or not list((tmp_path / "sharded" / ".parts").iterdir())


def job_files(out):
    """Every file a finished job leaves, by name (progress and summaries differ in timings only)."""
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.endswith(".json")}


@pytest.mark.parametrize("image_format", ["png", "npz", "nifti", "nifti-volume"])
def test_any_split_at_one_batch_size_gives_the_full_runs_bytes(tmp_path, denoiser, sampler, image_format):
    """Every batch is padded to the batch size, so which indices share a batch changes no byte."""
    n, batch_size = 7, 3
    run(tmp_path / "full", denoiser, sampler, n=n, batch_size=batch_size, image_format=image_format)
    full = job_files(tmp_path / "full")
    for count in (2, 3):
        out = tmp_path / f"split-{count}"
        for index in range(count):
            run(out, denoiser, sampler, n=n, batch_size=batch_size, image_format=image_format, shard=Shard(index, count))
        if image_format in ("png", "nifti"):
            assert job_files(out) == full
        elif image_format == "npz":
            indices, images = zip(*(load_npz(out / f"samples.shard-{i}-of-{count}.npz") for i in range(count)))
            merged = np.empty((n, *SHAPE), dtype=np.int64)
            for i, part in zip(indices, images):
                merged[i] = part
            assert np.array_equal(merged, load_npz(tmp_path / "full" / "samples.npz")[1])
        else:  # a volume per shard: its slices are the full volume's slices of those indices
            import nibabel as nib

            whole = np.asarray(nib.load(tmp_path / "full" / "samples.nii.gz").dataobj.get_unscaled())
            for index in range(count):
                part = nib.load(out / f"samples.shard-{index}-of-{count}.nii.gz").dataobj.get_unscaled()
                assert np.array_equal(np.asarray(part), whole[:, :, index::count])


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"micro_batch": 3}, r"\(progress.shard-0-of-2.json: arithmetic.micro_batch was 2, now 3\)"),
        ({"device": "cpu AVX2"}, r"\(progress.shard-0-of-2.json: arithmetic.device was cpu AVX512, now cpu AVX2\)"),
    ],
)
def test_a_shard_of_another_arithmetic_is_refused(tmp_path, denoiser, sampler, changed, message):
    run(tmp_path / "o", denoiser, sampler, n=4, batch_size=2, shard=Shard(0, 2))
    OutputDir(tmp_path / "o", settings(n=4, batch_size=3, shard=Shard(1, 2)), resume=False)  # another batch size: fine
    with pytest.raises(InvalidArgumentError, match=message):
        OutputDir(tmp_path / "o", settings(n=4, shard=Shard(1, 2), **changed), resume=True)


def test_resume_with_another_batch_size_continues_and_another_arithmetic_is_refused(tmp_path, denoiser, sampler):
    run(tmp_path / "full", denoiser, sampler, n=5, batch_size=5, image_format="png")
    with pytest.raises(KeyboardInterrupt):  # dies in batch 2
        run(tmp_path / "o", KilledAfter(denoiser, 4 + 2), sampler, n=5, batch_size=2, image_format="png")
    with pytest.raises(InvalidArgumentError, match=r"arithmetic.device was cpu AVX512, now cpu AVX2 \(the images"):
        OutputDir(tmp_path / "o", settings(n=5, image_format="png", device="cpu AVX2"), resume=True)
    run(tmp_path / "o", denoiser, sampler, resume=True, n=5, batch_size=3, image_format="png")
    assert job_files(tmp_path / "o") == job_files(tmp_path / "full")


@pytest.mark.parametrize(("batch_size", "micro_batches", "padded"), [(2, 3, 1), (5, 3, 1), (3, 3, 1), (1, 5, 5)])
def test_every_call_has_the_micro_batchs_rows_and_only_short_ones_are_padded(
    tmp_path, denoiser, sampler, batch_size, micro_batches, padded
):
    calls = []

    def counting(x, t):
        calls.append(x.shape[0])
        return denoiser(x, t)

    # n 5, micro-batch 2: batches of 2 -> [0, 1], [2, 3], [4 + a copy]; of 5 -> the same; of 3 -> [0, 1], [2 + a
    # copy], [3, 4]; of 1 -> five micro-batches of one row and a copy. 4 steps each.
    summary = run(tmp_path / "o", counting, sampler, n=5, batch_size=batch_size)
    assert set(calls) == {2} and len(calls) == micro_batches * 4
    assert summary["padded_rows"] == padded


class KilledAfter:
    """A denoiser that dies (like Ctrl-C) after ``calls`` calls."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __call__(self, x, t):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.inner(x, t)


@pytest.mark.parametrize("image_format", ["png", "npz", "nifti", "nifti-volume"])
def test_resume_after_kill_gives_the_uninterrupted_files(tmp_path, denoiser, sampler, image_format):
    run(tmp_path / "clean", denoiser, sampler, image_format=image_format)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(killed, KilledAfter(denoiser, 4 + 2), sampler, image_format=image_format)  # dies in batch 2
    progress = json.loads((killed / "progress.json").read_text())
    assert progress["done"] == [0, 1]
    summary = run(killed, denoiser, sampler, image_format=image_format, resume=True)
    assert summary["images"] == 3 and summary["already_done"] == 2
    if image_format == "npz":
        clean, resumed = load_npz(tmp_path / "clean" / "samples.npz"), load_npz(killed / "samples.npz")
        assert clean[0].tolist() == resumed[0].tolist()
        assert np.array_equal(clean[1], resumed[1])
    else:  # png and NIfTI files are byte-for-byte reproducible (gzip without a time stamp)
        suffix = {"png": ".png", "nifti": ".nii.gz", "nifti-volume": ".nii.gz"}[image_format]
        names = sorted(p.name for p in (tmp_path / "clean").glob(f"*{suffix}"))
        assert names == sorted(p.name for p in killed.glob(f"*{suffix}"))
        assert len(names) == (1 if image_format == "nifti-volume" else 5)
        for name in names:
            assert (tmp_path / "clean" / name).read_bytes() == (killed / name).read_bytes()
    assert not list(killed.glob(".*tmp*"))


@pytest.mark.parametrize("image_format", ["npz", "nifti-volume"])
def test_resuming_a_finished_stacked_shard_makes_nothing(tmp_path, denoiser, sampler, image_format):
    run(tmp_path / "o", denoiser, sampler, image_format=image_format)  # parts merged and removed
    merged = next((tmp_path / "o").glob("samples.n*")).read_bytes()
    summary = run(tmp_path / "o", denoiser, sampler, image_format=image_format, resume=True)
    assert summary["images"] == 0 and summary["already_done"] == 5
    assert next((tmp_path / "o").glob("samples.n*")).read_bytes() == merged


def test_a_shard_without_indices_finishes_without_a_file(tmp_path, denoiser, sampler):
    summary = run(tmp_path / "o", denoiser, sampler, n=1, shard=Shard(1, 2))
    assert summary["images"] == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["samples.shard-1-of-2.json"]


def test_shards_of_another_split_are_refused(tmp_path, denoiser, sampler):
    run(tmp_path / "o", denoiser, sampler, n=2, shard=Shard(0, 2))
    for shard, resume in [(Shard(), False), (Shard(1, 3), True)]:
        with pytest.raises(OutputError, match=r"split into 2 shard\(s\) \(progress.shard-0-of-2.json\)"):
            OutputDir(tmp_path / "o", settings(n=2, shard=shard), resume=resume)
    assert OutputDir(tmp_path / "o", settings(n=2, shard=Shard(1, 2)), resume=False).todo == [1]


def test_nifti_holds_the_png_pixels_upright_and_scaled_to_the_model_range(tmp_path, denoiser, sampler):
    import nibabel as nib

    from vmddpm_deploy.data.readers import read_planes

    for image_format in ("png", "nifti", "nifti-volume"):
        run(tmp_path / image_format, denoiser, sampler, n=3, image_format=image_format)
    png = [np.asarray(Image.open(tmp_path / "png" / f"{i:05d}.png"), dtype=np.int64) for i in range(3)]
    volume = nib.load(tmp_path / "nifti-volume" / "samples.nii.gz")
    assert volume.shape == (8, 8, 3) and volume.get_data_dtype() == np.uint16
    for i in range(3):
        single = nib.load(tmp_path / "nifti" / f"{i:05d}.nii.gz")
        assert single.shape == (8, 8, 1)
        for image, k in ((single, 0), (volume, i)):
            # Stored: the PNG's uint16 pixels (same batches, same values); read: the model's [-1, 1].
            assert np.array_equal(np.asarray(image.dataobj.get_unscaled())[:, :, k], png[i])
            np.testing.assert_allclose(image.get_fdata()[:, :, k], png[i] / 65535 * 2 - 1, rtol=0, atol=1e-6)
    # 1 mm pixels, rows running posterior (down on screen), columns right, samples superior.
    assert nib.aff2axcodes(volume.affine) == ("P", "R", "S") and volume.header.get_zooms() == (1.0, 1.0, 1.0)
    assert np.allclose(volume.affine @ [0, 0, 0, 1], [0, 7, 0, 1]) and np.allclose(volume.affine @ [7, 7, 2, 1], [7, 0, 2, 1])
    # A NIfTI reader that orients slices the way radiology viewers show them sees the PNG.
    planes = read_planes(tmp_path / "nifti-volume" / "samples.nii.gz", "nifti", slice_axis="axial")
    for i in range(3):
        np.testing.assert_allclose(planes.pixels[i], png[i] / 65535 * 2 - 1, atol=1e-6)
    single = nib.load(tmp_path / "nifti" / "00002.nii.gz")
    assert single.header["descrip"].item().decode() == "ddim steps=4 eta=0.5 seed=11 index=2"
    assert volume.header["descrip"].item().decode() == "ddim steps=4 eta=0.5 seed=11 index=k"
    metadata = json.loads(volume.header.extensions[0].get_content())
    assert metadata["indices"] == [0, 1, 2] and metadata["settings"]["seed"] == 11
    assert metadata["settings"]["source_sha256"] == "f" * 64


def test_sample_cli_writes_a_nifti_volume(tmp_path, micro_config):
    import nibabel as nib
    from typer.testing import CliRunner

    from vmddpm_deploy.checkpoint import save_checkpoint
    from vmddpm_deploy.cli import app

    ckpt = save_checkpoint(init_checkpoint(micro_config, NoiseSchedule(), seed=0), tmp_path / "m.pt")
    result = CliRunner().invoke(app, [
        "sample", str(ckpt), "--n", "3", "--steps", "2", "--format", "nifti-volume", "--shard", "1/2",
        "--out", str(tmp_path / "o"),
    ])
    assert result.exit_code == 0, result.output
    volume = nib.load(tmp_path / "o" / "samples.shard-1-of-2.nii.gz")
    assert volume.shape == (8, 8, 1)
    assert volume.header["descrip"].item().decode().endswith("seed=0 index=1+2k")


def test_resume_with_other_settings_is_refused(tmp_path, denoiser, sampler):
    run(tmp_path / "o", denoiser, sampler, n=2)
    with pytest.raises(InvalidArgumentError, match="--n was 2, now 3"):
        OutputDir(tmp_path / "o", settings(n=3), resume=True)


def test_resume_trusts_only_files_on_disk(tmp_path, denoiser, sampler):
    out = tmp_path / "o"
    run(out, denoiser, sampler, n=3, image_format="png")
    (out / "00001.png").unlink()
    (out / "samples.json").unlink()
    job = OutputDir(out, settings(n=3, image_format="png"), resume=True)
    assert job.todo == [1]


@pytest.mark.parametrize("text,index,count", [("0/1", 0, 1), ("3/4", 3, 4), (" 1 / 2 ", 1, 2)])
def test_shard_parse(text, index, count):
    assert Shard.parse(text) == Shard(index, count)
    assert list(Shard(index, count).indices(9)) == [i for i in range(9) if i % count == index]


@pytest.mark.parametrize("resume", [False, True])
def test_a_merged_file_without_its_progress_file_is_never_taken_for_this_runs(tmp_path, denoiser, sampler, resume):
    run(tmp_path / "o", denoiser, sampler, n=3)
    (tmp_path / "o" / "progress.json").unlink()
    (tmp_path / "o" / "samples.json").unlink()
    merged = (tmp_path / "o" / "samples.npz").read_bytes()
    with pytest.raises(OutputError, match="samples" if resume else "already holds"):
        OutputDir(tmp_path / "o", settings(n=3), resume=resume)
    assert (tmp_path / "o" / "samples.npz").read_bytes() == merged


@pytest.mark.parametrize(
    "progress,phrase",
    [
        ({"format": "vmddpm-deploy-samples/1", "settings": {}, "done": []}, "older vmddpm-deploy, whose images depended"),
        ({"format": "vmddpm-deploy-samples/2", "settings": {}, "done": []}, "older vmddpm-deploy, whose dpm-solver++"),
        ({"format": "vmddpm-deploy-samples/3", "settings": {}, "done": []}, "older vmddpm-deploy, whose settings did"),
        ({"format": "vmddpm-deploy-samples/4", "settings": {}, "done": []}, "older vmddpm-deploy, whose images depended on --batch"),
        ({"format": "vmddpm-deploy-samples/5", "settings": {}, "done": ["a"]}, "no list of done indices"),
        ({"format": "vmddpm-deploy-samples/5", "done": [0]}, "no settings"),
        ([1, 2], "is not a vmddpm-deploy-samples/5 progress file"),
    ],
)
def test_unusable_progress_files_are_one_line(tmp_path, progress, phrase):
    out = tmp_path / "o"
    out.mkdir()
    (out / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(OutputError, match=phrase):
        OutputDir(out, settings(n=3), resume=True)


def test_a_shard_with_another_seed_is_refused_and_other_json_files_are_ignored(tmp_path, denoiser, sampler):
    run(tmp_path / "o", denoiser, sampler, n=4, shard=Shard(0, 2))
    (tmp_path / "o" / "progress-notes.json").write_text("not ours")
    other_seed = dataclasses.replace(settings(n=4, shard=Shard(1, 2)), seed=12)
    with pytest.raises(InvalidArgumentError, match=r"\(progress.shard-0-of-2.json: --seed was 11, now 12\)"):
        OutputDir(tmp_path / "o", other_seed, resume=False)
    assert OutputDir(tmp_path / "o", settings(n=4, shard=Shard(1, 2)), resume=False).todo == [1, 3]


def test_a_job_records_only_a_resolved_precision(tmp_path):
    import dataclasses

    unresolved = dataclasses.replace(settings(), precision="auto")
    with pytest.raises(InvalidArgumentError, match="precision must be resolved"):
        OutputDir(tmp_path / "o", unresolved, resume=False)
    assert not (tmp_path / "o").exists()
