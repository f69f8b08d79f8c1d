"""A shard's output directory: which indices it still needs, where they go, and how to resume.

It only knows disk state (settings, progress, writers, merge, temporaries); what fills it is
:func:`vmddpm_deploy.jobs.sampling.sample_shard`.

Layout of an output directory (one shard ``I/N`` of a job; ``N = 1`` without ``--shard``)::

    00000.png, 00001.png, ...         png: one 16-bit PNG per sample, written atomically
    00000.nii.gz, ...                 nifti: one NIfTI per sample, (H, W, 1) uint16 scaled to [-1, 1]
    .parts/00000-00015.npz, ...       npz, nifti-volume: one part per batch, merged at the end into
    samples.npz                       npz: ``indices (n,)``, ``images (n, C, H, W) uint16``
    samples.nii.gz                    nifti-volume: the shard's samples stacked, (H, W, n) uint16
    progress[.shard-I-of-N].json      settings + done indices, rewritten after every batch
    samples[.shard-I-of-N].json       written once the shard is complete: settings, timings

A shard takes the indices ``i`` with ``i % N == I``; shards of one job may share a directory (a
directory holds one split: shards of another ``N`` are refused). ``progress.json`` is only trusted
together with the files it lists, so a kill at any moment leaves a directory that ``--resume``
continues exactly. NIfTI layout and header: :func:`vmddpm_deploy.outputs.encode_nifti`.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vmddpm_deploy import __version__
from vmddpm_deploy.atomic_write import temporaries, write_atomic
from vmddpm_deploy.choices import IMAGE_FORMATS
from vmddpm_deploy.errors import InvalidArgumentError, OutputError
from vmddpm_deploy.jobs.spec import JobSettings, Shard, describe_changes
from vmddpm_deploy.outputs import (
    prepare_output_dir,
    sample_file_name,
    to_uint16,
    write_nifti,
    write_npz,
    write_png16,
)

#: /5: fixed-shape micro-batches on one intra-op thread each, the arithmetic recorded.
PROGRESS_FORMAT = "vmddpm-deploy-samples/5"
#: Earlier formats, with what made their images differ; a run started under one is not continued.
_OLDER_PROGRESS_FORMATS = {
    "vmddpm-deploy-samples/1": "whose images depended on how batches were composed",
    "vmddpm-deploy-samples/2": "whose dpm-solver++ did not clip its x0 predictions",
    "vmddpm-deploy-samples/3": "whose settings did not record the timestep spacing and precision",
    "vmddpm-deploy-samples/4": "whose images depended on --batch-size and the CPU thread count",
}
#: ``.parts/FIRST-LAST.npz``: one batch of a stacked format, named after its first and last index.
_PART_NAME = re.compile(r"(\d+)-(\d+)\.npz")
#: ``00042.png``, ``00042.nii.gz``: one sample's file (outputs.sample_file_name).
_SAMPLE_NAME = re.compile(r"(\d+)\.(?:png|nii\.gz)")




def _read_progress(path: Path) -> dict[str, Any]:
    """A progress file's content, or one OutputError line saying what to do."""
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path} is unreadable ({exc}); remove it to start over") from None
    if isinstance(progress, dict) and progress.get("format") in _OLDER_PROGRESS_FORMATS:
        raise OutputError(
            f"{path} is from an older vmddpm-deploy, {_OLDER_PROGRESS_FORMATS[progress['format']]}; "
            "finish that run with the version that started it, or start over in another --out"
        )
    if not isinstance(progress, dict) or progress.get("format") != PROGRESS_FORMAT:
        raise OutputError(f"{path} is not a {PROGRESS_FORMAT} progress file")
    done = progress.get("done")
    if not isinstance(progress.get("settings"), dict) or not isinstance(done, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in done
    ):
        raise OutputError(f"{path} is unreadable (no settings or no list of done indices); remove it to start over")
    return progress


def _recorded_settings(path: Path) -> dict[str, Any]:
    return _read_progress(path)["settings"]


def remove_samples(out: Path, shard: Shard) -> None:
    """What ``sample --force`` removes before shard ``shard`` starts afresh: its own files, and the
    progress and merged files of a run split into another number of shards (which would be refused
    beside it). Other shards of the same split stay: they may be running now.

    Progress files go first, so a kill part way leaves no progress file naming samples that are gone:
    the directory then starts afresh with --resume or --force.
    """
    if not out.is_dir():
        return

    def replaced(index: int, count: int) -> bool:
        return count != shard.count or index == shard.index

    def own_index(index: str) -> bool:
        return int(index) % shard.count == shard.index

    records = re.compile(r"(progress|samples)(?:\.shard-(\d+)-of-(\d+))?\.(?:json|npz|nii\.gz)")
    matches = [(path, records.fullmatch(path.name)) for path in sorted(out.iterdir())]
    matches = [(path, match) for path, match in matches if match and replaced(int(match[2] or 0), int(match[3] or 1))]
    for path, _ in sorted(matches, key=lambda item: item[1][1] != "progress"):
        path.unlink(missing_ok=True)
    for path in out.iterdir():
        sample = _SAMPLE_NAME.fullmatch(path.name)
        if sample is not None and own_index(sample[1]):
            path.unlink(missing_ok=True)
    if (out / ".parts").is_dir():
        for path in (out / ".parts").iterdir():
            part = _PART_NAME.fullmatch(path.name)
            if part is not None and own_index(part[1]):
                path.unlink(missing_ok=True)


class OutputDir:
    """The output directory of one shard: what is done, what is left, and the writers."""

    def __init__(self, out: Path, settings: JobSettings, resume: bool):
        if settings.image_format not in IMAGE_FORMATS:
            raise InvalidArgumentError(f"unknown image format {settings.image_format!r}")
        if settings.batch_size is None or settings.batch_size < 1:
            raise InvalidArgumentError(f"a job's batch size must be resolved to >= 1, got {settings.batch_size!r}")
        if settings.precision == "auto":
            raise InvalidArgumentError("a job's precision must be resolved (fp32 or bf16) before it writes, got auto")
        if settings.arithmetic is None:
            raise InvalidArgumentError("a job's arithmetic (backend, device, micro-batch) must be resolved first")
        self.out = out
        self.settings = settings
        self._format = IMAGE_FORMATS[settings.image_format]
        self.progress_path = out / f"progress{settings.shard.suffix}.json"
        self.summary_path = out / f"samples{settings.shard.suffix}.json"
        self.parts_dir = out / ".parts"
        self.done: set[int] = self._resumed_indices() if resume else self._fresh()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vmddpm-writer")
        self._pending: list[Future] = []

    # -- starting -------------------------------------------------------------------------
    def _refuse_other_splits(self) -> None:
        """Shards of another N overlap this one's indices: mixing them would duplicate samples. Shards
        with other settings or another arithmetic would make other images than one run of the job;
        another batch size is fine (the images depend on the micro-batch, recorded in the arithmetic)."""
        for path in sorted(self.out.glob("progress*.json")):
            match = re.fullmatch(r"progress(?:\.shard-\d+-of-(\d+))?\.json", path.name)
            count = int(match[1] or 1) if match else self.settings.shard.count
            if count != self.settings.shard.count:
                raise OutputError(
                    f"{self.out} holds a run split into {count} shard(s) ({path.name}); continue it with "
                    f"the same split (--shard I/{count}, or --ray --workers {count}) or choose another --out"
                )
            if match is None or path == self.progress_path:
                continue  # not a shard's progress file; or this shard's own: --resume compares every setting
            changes = describe_changes(_recorded_settings(path), self.settings.to_dict(), skip=JobSettings.SCHEDULING)
            if changes:
                raise InvalidArgumentError(
                    f"{self.out} holds shards made with other settings ({path.name}: {changes}); give every "
                    "shard of a job the same settings and arithmetic, or choose another --out"
                )

    def _fresh(self) -> set[int]:
        self._refuse_other_splits()
        if self.progress_path.exists() or self.summary_path.exists() or self._merged_without_progress():
            raise OutputError(
                f"{self.out} already holds this shard's samples; pass --resume to continue them, "
                "--force to replace them, or choose another --out"
            )
        prepare_output_dir(self.out)
        return set()

    def _resumed_indices(self) -> set[int]:
        self._refuse_other_splits()
        if not self.progress_path.exists():
            if self._merged_without_progress():
                raise OutputError(
                    f"{self.out} holds {self._stacked_path.name} but no {self.progress_path.name} saying how it "
                    "was made; move it away to make it again, or choose another --out"
                )
            prepare_output_dir(self.out)
            return set()  # nothing to resume: start, as a fresh run would
        progress = _read_progress(self.progress_path)
        recorded, done = progress["settings"], progress["done"]
        changes = describe_changes(recorded, self.settings.to_dict(), skip=("batch_size",))
        if changes:
            where = " (the images would differ: resume where it is the same)" if "arithmetic." in changes else ""
            raise InvalidArgumentError(
                f"--resume with different settings: {changes}{where}; use the original settings, --force to "
                "replace the samples, or another --out"
            )
        return self._on_disk({int(i) for i in done})

    def _merged_without_progress(self) -> bool:
        """A merged file whose settings nothing records: it must not be mistaken for this run's."""
        return self._format.stacked and self._stacked_path.exists() and not self.progress_path.exists()

    def _sample_path(self, index: int) -> Path:
        return self.out / sample_file_name(index, self.settings.n, self._format.suffix)

    @property
    def _stacked_path(self) -> Path:
        return self.out / f"samples{self.settings.shard.suffix}{self._format.suffix}"

    def _on_disk(self, done: set[int]) -> set[int]:
        """The indices of ``done`` whose images really are on disk (the only ones to trust)."""
        if not self._format.stacked:
            return {i for i in done if self._sample_path(i).exists()}
        if self._stacked_path.exists():
            return done  # merged (atomically) only once every index of the shard was done
        return done & set().union(*self._parts().values())

    def _parts(self) -> dict[Path, set[int]]:
        if not self.parts_dir.exists():
            return {}
        parts = {}
        for path in sorted(self.parts_dir.glob("*.npz")):
            with np.load(path) as data:
                parts[path] = set(data["indices"].tolist())
        return parts

    # -- running ----------------------------------------------------------------------------
    @property
    def todo(self) -> list[int]:
        return [i for i in self.settings.shard.indices(self.settings.n) if i not in self.done]

    def submit(self, indices: list[int], x0: np.ndarray) -> None:
        """Write a batch in the background; its indices count as done once it is on disk."""
        self._raise_writer_errors()
        images = to_uint16(x0)
        self._pending.append(self._writer.submit(self._write_batch, list(indices), images))

    def _write_batch(self, indices: list[int], images: np.ndarray) -> None:
        if self.settings.image_format == "png":
            for index, image in zip(indices, images):
                write_png16(self._sample_path(index), image)
        elif self.settings.image_format == "nifti":
            for index, image in zip(indices, images):
                write_nifti(self._sample_path(index), image[None], *self._nifti_header(f"index={index}", index=index))
        else:
            self.parts_dir.mkdir(exist_ok=True)
            write_npz(self.parts_dir / f"{indices[0]:05d}-{indices[-1]:05d}.npz", np.asarray(indices), images)
        self.done.update(indices)
        self._write_progress()

    def _write_progress(self) -> None:
        payload = {"format": PROGRESS_FORMAT, "settings": self.settings.to_dict(), "done": sorted(self.done)}
        data = json.dumps(payload).encode()
        write_atomic(self.progress_path, lambda handle: handle.write(data))

    def _raise_writer_errors(self) -> None:
        finished = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in finished:
            future.result()  # re-raises OutputError (e.g. disk full) in the sampling thread

    def close(self) -> None:
        """Wait for every pending write (also on Ctrl-C, so the directory stays consistent)."""
        self._writer.shutdown(wait=True)
        for future in self._pending:
            future.result()
        self._pending = []

    def finish(self, summary: dict[str, Any]) -> Path:
        """After the last batch: merge npz parts, clear what a killed run left, write the summary."""
        self.close()
        if self._format.stacked:
            self._merge_parts()
        self._remove_stale_temporaries()
        payload = {"format": PROGRESS_FORMAT, "settings": self.settings.to_dict(), **summary}
        data = json.dumps(payload, indent=2).encode()
        return write_atomic(self.summary_path, lambda handle: handle.write(data))

    def _merge_parts(self) -> None:
        mine = set(self.settings.shard.indices(self.settings.n))
        parts = {path: indices for path, indices in self._parts().items() if indices & mine}
        if not parts:
            return  # merged by an earlier run, or a shard with no indices (N > n)
        target = self._stacked_path
        if target.exists():
            # Written (atomically) only once every index was done: a run killed while removing the
            # parts left some behind. Merging those again would drop the others' samples.
            for path in parts:
                path.unlink(missing_ok=True)
            return
        chunks = [np.load(path) for path in parts]
        # A batch re-made after a kill can repeat a part's indices (same images): keep one of each.
        indices, first = np.unique(np.concatenate([c["indices"] for c in chunks]), return_index=True)
        images = np.concatenate([c["images"] for c in chunks])[first]
        if self.settings.image_format == "npz":
            write_npz(target, indices, images)
        else:
            shard = self.settings.shard
            where = "index=k" if shard.count == 1 else f"index={shard.index}+{shard.count}k"
            write_nifti(target, images, *self._nifti_header(where, indices=indices.tolist()))
        for chunk in chunks:
            chunk.close()
        for path in parts:
            path.unlink()

    def _remove_stale_temporaries(self) -> None:
        """Remove the temporaries (:func:`write_atomic`'s) that a killed run of this shard left beside
        this shard's files. Other shards' temporaries stay: they may be writing now."""
        shard, n = self.settings.shard, self.settings.n

        def mine(index: str) -> bool:  # without a set of every index: a job may hold millions
            return int(index) < n and int(index) % shard.count == shard.index

        own = {self.progress_path.name, self.summary_path.name, self._stacked_path.name}
        for tmp, target in temporaries(self.out):
            sample = _SAMPLE_NAME.fullmatch(target)
            if target in own or (sample is not None and not self._format.stacked and mine(sample[1])):
                tmp.unlink(missing_ok=True)
        for tmp, target in temporaries(self.parts_dir):
            part = _PART_NAME.fullmatch(target)
            if part is not None and mine(part[1]):  # a part is named after its first index
                tmp.unlink(missing_ok=True)

    def _nifti_header(self, where: str, **placement: Any) -> tuple[str, dict[str, Any]]:
        """NIfTI ``descrip`` (80 bytes: sampler, steps, eta, seed, which sample is where) and the
        JSON extension with every setting. ``where``: "index=7" or, in a volume, "index=1+4k"
        (slice k is sample 1 + 4k)."""
        s = self.settings
        eta = f" eta={s.eta:g}" if s.sampler == "ddim" else ""
        description = f"{s.sampler} steps={s.steps}{eta} seed={s.seed} {where}"
        settings = s.to_dict()
        del settings["batch_size"]  # the images do not depend on it: neither do their files
        if "index" in placement:
            del settings["shard"]  # one sample's file is the same whichever shard made it
        metadata = {
            "generator": f"vmddpm-deploy {__version__}",
            "settings": settings,
            **placement,
            "intensity": "stored uint16 v; value = v * scl_slope + scl_inter = v * 2/65535 - 1, the model's [-1, 1]",
        }
        return description, metadata
