"""The train command's rules: a resumed run's train state is read once, for its settings and model
and for the run itself."""

from __future__ import annotations

import json

import torch

from tests.cli.test_train import pngs  # noqa: F401  (the fixture: a folder of 16-bit PNGs)
from vmddpm_deploy.data import LoadOptions
from vmddpm_deploy.training import run_files
from vmddpm_deploy.training.request import TrainRequest, run_request


def test_resume_reads_the_train_state_once(tmp_path, pngs, micro_config, monkeypatch):
    config_file = tmp_path / "micro.json"
    config_file.write_text(json.dumps(micro_config.to_dict()))
    common = {"data": str(pngs), "output": tmp_path / "ckpt.pt", "device": torch.device("cpu"),
              "load_options": LoadOptions()}
    first = run_request(TrainRequest(**common, given_settings={"steps": 1, "batch_size": 2}, config_file=config_file))
    assert first.result.steps_done == 1

    reads = []
    real = run_files.load_weights_only
    monkeypatch.setattr(run_files, "load_weights_only", lambda path, what: reads.append(what) or real(path, what))
    resumed = run_request(TrainRequest(**common, given_settings={"steps": 2}, resume=True))
    assert resumed.result.steps_done == 2 and resumed.settings.batch_size == 2  # the run's own batch size
    assert reads == ["train state"]
