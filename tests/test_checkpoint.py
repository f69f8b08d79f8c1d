"""Checkpoints: round trip, EMA preference, and one clear error per kind of bad file."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save as save_safetensors

from vmddpm_deploy.checkpoint import FORMAT, Checkpoint, build_model, init_checkpoint, load_checkpoint, save_checkpoint
from vmddpm_deploy.diffusion import NoiseSchedule
from vmddpm_deploy.errors import CheckpointError, OutputError


@pytest.fixture
def checkpoint(micro_config) -> Checkpoint:
    return init_checkpoint(micro_config, NoiseSchedule(kind="cosine"), seed=3)


@pytest.mark.parametrize("name", ["ckpt.safetensors", "ckpt.pt"])
def test_round_trip(tmp_path, checkpoint, name):
    path = save_checkpoint(checkpoint, tmp_path / name)
    loaded = load_checkpoint(path)
    assert loaded.config == checkpoint.config
    assert loaded.schedule == checkpoint.schedule
    assert loaded.ema is None
    for key, value in checkpoint.model.items():
        assert torch.equal(loaded.model[key], value)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_init_is_seeded_and_leaves_global_rng_alone(micro_config):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = init_checkpoint(micro_config, NoiseSchedule(), seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = init_checkpoint(micro_config, NoiseSchedule(), seed=1)
    c = init_checkpoint(micro_config, NoiseSchedule(), seed=2)
    key = "stem.weight"
    assert torch.equal(a.model[key], b.model[key]) and not torch.equal(a.model[key], c.model[key])


def test_ema_weights_are_used_for_inference(tmp_path, checkpoint, micro_config):
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in checkpoint.model.items()}
    path = save_checkpoint(Checkpoint(checkpoint.config, checkpoint.schedule, checkpoint.model, ema), tmp_path / "c.pt")
    model = build_model(load_checkpoint(path))
    assert torch.equal(model.state_dict()["stem.weight"], ema["stem.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_garbage_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_plain_state_dict_is_not_a_checkpoint(tmp_path, checkpoint):
    path = tmp_path / "weights.pt"
    torch.save(checkpoint.model, path)
    with pytest.raises(CheckpointError, match="no 'format' entry"):
        load_checkpoint(path)


def test_unknown_format_version(tmp_path, checkpoint):
    payload = checkpoint.to_payload() | {"format": "vmddpm-deploy/9"}
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="format 'vmddpm-deploy/9'"):
        load_checkpoint(tmp_path / "c.pt")


def test_weights_for_another_config_name_the_first_offending_key(tmp_path, checkpoint):
    weights = dict(checkpoint.model)
    weights["stem.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(checkpoint.to_payload() | {"model": weights}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"stem\.weight has shape \(3, 3, 3, 3\)"):
        load_checkpoint(tmp_path / "c.pt")
    del weights["stem.weight"]
    torch.save(checkpoint.to_payload() | {"model": weights}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"missing stem\.weight"):
        load_checkpoint(tmp_path / "c.pt")


def test_bad_config_inside_checkpoint(tmp_path, checkpoint):
    payload = checkpoint.to_payload()
    payload["config"] = payload["config"] | {"scan_order": "spiral"}
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="scan_order must be one of"):
        load_checkpoint(tmp_path / "c.pt")


def test_save_into_a_directory_path_fails_cleanly(tmp_path, checkpoint):
    with pytest.raises(OutputError, match="is a directory"):
        save_checkpoint(checkpoint, tmp_path)


# -- the safetensors form -------------------------------------------------------------------------


def test_safetensors_layout_is_model_and_ema_tensors_with_json_metadata(tmp_path, checkpoint):
    ema = {k: v * 2 for k, v in checkpoint.model.items()}
    path = save_checkpoint(Checkpoint(checkpoint.config, checkpoint.schedule, checkpoint.model, ema), tmp_path / "c.safetensors")
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + header_length])
    metadata = header.pop("__metadata__")
    assert json.loads(metadata["format"]) == FORMAT
    assert json.loads(metadata["config"])["base_channels"] == checkpoint.config.base_channels
    assert json.loads(metadata["schedule"])["kind"] == "cosine"
    assert set(header) == {f"model.{k}" for k in checkpoint.model} | {f"ema.{k}" for k in ema}
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.ema["stem.weight"], ema["stem.weight"])


def test_ema_that_shares_the_raw_weights_memory_is_written(tmp_path, checkpoint):
    shared = Checkpoint(checkpoint.config, checkpoint.schedule, checkpoint.model, dict(checkpoint.model))
    loaded = load_checkpoint(save_checkpoint(shared, tmp_path / "c.safetensors"))
    assert torch.equal(loaded.ema["stem.weight"], checkpoint.model["stem.weight"])


def test_the_form_is_read_from_the_bytes_not_the_name(tmp_path, checkpoint):
    safetensors_bytes = save_checkpoint(checkpoint, tmp_path / "a.safetensors").read_bytes()
    (tmp_path / "renamed.pt").write_bytes(safetensors_bytes)
    torch_bytes = save_checkpoint(checkpoint, tmp_path / "b.pt").read_bytes()
    (tmp_path / "renamed.safetensors").write_bytes(torch_bytes)
    for name in ("renamed.pt", "renamed.safetensors"):
        assert torch.equal(load_checkpoint(tmp_path / name).model["stem.weight"], checkpoint.model["stem.weight"])


def _write_safetensors(path, tensors, **metadata_overrides):
    metadata = {"format": json.dumps(FORMAT)} | metadata_overrides
    path.write_bytes(save_safetensors({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))
    return path


def _metadata(checkpoint):
    return {"config": json.dumps(checkpoint.config.to_dict()), "schedule": json.dumps(checkpoint.schedule.to_dict())}


def test_safetensors_with_a_wrong_tensor_name_shape_or_prefix(tmp_path, checkpoint):
    tensors = {f"model.{k}": v for k, v in checkpoint.model.items()}
    cases = [
        (tensors | {"model.stem.weight": torch.zeros(3, 3, 3, 3)}, r"stem\.weight has shape \(3, 3, 3, 3\)"),
        ({k: v for k, v in tensors.items() if k != "model.stem.weight"}, r"missing stem\.weight"),
        (tensors | {"model.bogus": torch.zeros(1)}, "unexpected bogus"),
        (tensors | {"optimizer.step": torch.zeros(1)}, r"'optimizer\.step' is neither model\.\* nor ema\.\*"),
        ({}, "holds no model"),
    ]
    for tensors_case, message in cases:
        path = _write_safetensors(tmp_path / "c.safetensors", tensors_case, **_metadata(checkpoint))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_safetensors_with_bad_metadata(tmp_path, checkpoint):
    tensors = {f"model.{k}": v for k, v in checkpoint.model.items()}
    good = _metadata(checkpoint)
    cases = [
        (good | {"config": "{not json"}, "metadata 'config' is not JSON"),
        ({"config": good["config"]}, "lacks schedule"),
        (good | {"format": json.dumps("vmddpm-deploy/9")}, "format 'vmddpm-deploy/9'"),
        (good | {"config": json.dumps(checkpoint.config.to_dict() | {"scan_order": "spiral"})}, "scan_order must be"),
    ]
    for metadata, message in cases:
        path = _write_safetensors(tmp_path / "c.safetensors", tensors, **metadata)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save_safetensors({k: v.contiguous() for k, v in checkpoint.model.items()}))
    with pytest.raises(CheckpointError, match="not a vmddpm-deploy checkpoint"):
        load_checkpoint(plain)


def test_truncated_safetensors(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "c.safetensors")
    data = path.read_bytes()
    for cut in (4, 200, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a readable"):
            load_checkpoint(path)


def test_safetensors_header_that_lies_about_sizes(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "c.safetensors")
    data = path.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    name = next(key for key in header if key != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end + 4096]  # claims more bytes than the tensor's shape has
    lying = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(lying)) + lying + data[8 + header_length :])
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:])  # a header length past the end of the file
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


# -- a diffusers save_pretrained directory, read without diffusers ------------------------------------


def _pretrained_dir(tmp_path, checkpoint, **config_overrides):
    directory = tmp_path / "pretrained"
    directory.mkdir(exist_ok=True)
    config = {"_class_name": "VMDDPMModel", "_diffusers_version": "0.42.1", **checkpoint.config.to_dict(),
              "sample_size": checkpoint.config.image_size, "noise_schedule": checkpoint.schedule.to_dict()}
    (directory / "config.json").write_text(json.dumps(config | config_overrides))
    tensors = {f"model.{k}": v.contiguous() for k, v in checkpoint.model.items()}
    (directory / "diffusion_pytorch_model.safetensors").write_bytes(save_safetensors(tensors, metadata={"format": "pt"}))
    return directory


def test_save_pretrained_directory_loads(tmp_path, checkpoint):
    loaded = load_checkpoint(_pretrained_dir(tmp_path, checkpoint))
    assert (loaded.config, loaded.schedule) == (checkpoint.config, checkpoint.schedule)
    assert torch.equal(loaded.model["stem.weight"], checkpoint.model["stem.weight"])


def test_bad_save_pretrained_directories(tmp_path, checkpoint):
    directory = _pretrained_dir(tmp_path, checkpoint, _class_name="UNet2DModel")
    with pytest.raises(CheckpointError, match="of 'UNet2DModel', not of VMDDPMModel"):
        load_checkpoint(directory)
    _pretrained_dir(tmp_path, checkpoint, sample_size=64)
    with pytest.raises(CheckpointError, match="sample_size 64 differs from image_size 8"):
        load_checkpoint(directory)
    _pretrained_dir(tmp_path, checkpoint, base_channels=16)
    with pytest.raises(CheckpointError, match="weights do not match the config"):
        load_checkpoint(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not readable JSON"):
        load_checkpoint(directory)
    _pretrained_dir(tmp_path, checkpoint)
    (directory / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no diffusion_pytorch_model.safetensors"):
        load_checkpoint(directory)
