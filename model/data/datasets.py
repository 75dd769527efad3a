"""Datasets: TSN frame-folder lists, video lists, Something-Something V2, Diving48, class folders,
and the synthetic temporal-reasoning set. Videos decode through the shared core's PyAV code
(``videocore.decode.probe_and_decode``) and sample with its TSN sampler, so train and serve agree.

Every dataset yields ``(views, label)``: ``views`` is uint8 (V, T, S, S, 3) — one view in training,
clips x crops views in evaluation — and normalisation happens on the batch (``model.preprocess``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from model.data.synthetic import FLIP_PAIRS, SYNTHETIC_LABELS, render_clip
from model.data.transforms import eval_views, train_view
from videocore.contract import eval_resize_short_side
from videocore.decode import VideoLimits, probe_and_decode
from videocore.sampling import sample_segment_indices

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
# Something-Something V2's direction-dependent pairs under a horizontal flip, by template.
SSV2_FLIP_TEMPLATES = (
    ("Pushing [something] from left to right", "Pushing [something] from right to left"),
    ("Pulling [something] from left to right", "Pulling [something] from right to left"),
    (
        "Turning the camera left while filming [something]",
        "Turning the camera right while filming [something]",
    ),
)


@dataclass(frozen=True)
class VideoRecord:
    """One sample: a video file (or a folder of frames with ``num_frames``) and its class id."""

    path: Path
    label: int
    num_frames: int | None = None


def read_label_map(path: str | Path) -> list[str]:
    """One class per line, line index = class id."""
    labels = [line.strip() for line in Path(path).read_text().splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels or any(not label for label in labels):
        raise ValueError(f"{path}: expected one non-empty class name per line")
    return labels


def _split_line(line: str, fields: int, path: Path, number: int) -> list[str]:
    parts = line.rsplit(maxsplit=fields - 1)
    if len(parts) != fields:
        raise ValueError(f"{path}:{number}: expected {fields} fields, got {line!r}")
    return parts


def read_frame_list(list_file: str | Path, root: str | Path = ".") -> list[VideoRecord]:
    """TSN/TSM list file: ``path num_frames label`` per line, frames in ``root/path``."""
    list_file, root = Path(list_file), Path(root)
    records = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if line.strip():
            path, count, label = _split_line(line.strip(), 3, list_file, number)
            records.append(VideoRecord(root / path, int(label), int(count)))
    return records


def read_video_list(list_file: str | Path, root: str | Path = ".") -> list[VideoRecord]:
    """mmaction2 video list: ``path label`` per line."""
    list_file, root = Path(list_file), Path(root)
    records = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if line.strip():
            path, label = _split_line(line.strip(), 2, list_file, number)
            records.append(VideoRecord(root / path, int(label)))
    return records


def read_something_something_v2(
    root: str | Path, split: str = "train", video_dir: str = "videos"
) -> tuple[list[VideoRecord], list[str]]:
    """SSv2 as distributed: ``labels.json`` (template -> id), ``train.json`` / ``validation.json``
    (``id``, ``template`` with [something] brackets), videos ``<video_dir>/<id>.webm``."""
    root = Path(root)
    mapping: dict[str, str] = json.loads((root / "labels.json").read_text())
    labels = [""] * len(mapping)
    for name, index in mapping.items():
        labels[int(index)] = name
    entries = json.loads((root / f"{split}.json").read_text())
    records = []
    for entry in entries:
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in mapping:
            raise ValueError(f"{root / f'{split}.json'}: id {entry['id']}: unknown template {template!r}")
        records.append(VideoRecord(root / video_dir / f"{entry['id']}.webm", int(mapping[template])))
    return records, labels


def ssv2_flip_pairs(labels: Sequence[str]) -> dict[int, int]:
    """Class-id pairs that a horizontal flip swaps, for an SSv2-style label list."""
    index = {label: i for i, label in enumerate(labels)}
    pairs: dict[int, int] = {}
    for left, right in SSV2_FLIP_TEMPLATES:
        a, b = left.replace("[", "").replace("]", ""), right.replace("[", "").replace("]", "")
        if a in index and b in index:
            pairs[index[a]], pairs[index[b]] = index[b], index[a]
    return pairs


def read_diving48(annotation: str | Path, video_root: str | Path, suffix: str = ".mp4") -> list[VideoRecord]:
    """Diving48: a JSON list of ``{"vid_name", "label", ...}``, videos ``<video_root>/<vid_name>.mp4``."""
    entries = json.loads(Path(annotation).read_text())
    return [VideoRecord(Path(video_root) / f"{e['vid_name']}{suffix}", int(e["label"])) for e in entries]


def read_class_folders(root: str | Path) -> tuple[list[VideoRecord], list[str]]:
    """``root/<class name>/<video>``: classes in sorted order."""
    root = Path(root)
    labels = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not labels:
        raise ValueError(f"{root}: no class folders")
    records = [
        VideoRecord(video, index)
        for index, label in enumerate(labels)
        for video in sorted((root / label).iterdir())
        if video.suffix.lower() in VIDEO_SUFFIXES
    ]
    return records, labels


class ClipDataset(Dataset):
    """Real videos or frame folders, sampled and cropped as the paper (train) or the service (test)."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        num_frames: int,
        input_size: int,
        train: bool,
        clips: int = 1,
        crops: int = 1,
        flip_pairs: Mapping[int, int] | None = None,
        image_template: str = "{:05d}.jpg",
        limits: VideoLimits | None = None,
        seed: int = 0,
        crop_region: str = "full",
    ) -> None:
        self.records = list(records)
        self.crop_region = crop_region
        self.num_frames, self.input_size, self.train = num_frames, input_size, train
        self.clips, self.crops = clips, crops
        self.flip_pairs = flip_pairs
        self.image_template = image_template
        self.limits = limits or VideoLimits(timeout_s=120.0)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New random crops and frames every epoch, reproducible for a seed."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _indices(self, count: int, rng: np.random.Generator) -> list[list[int]]:
        if self.train:
            return [sample_segment_indices(count, self.num_frames, "train", rng)]
        return [
            sample_segment_indices(count, self.num_frames, "test", clip_index=k, num_clips=self.clips)
            for k in range(self.clips)
        ]

    def _load(self, record: VideoRecord, rng: np.random.Generator) -> list[np.ndarray]:
        short_side = eval_resize_short_side(self.input_size)
        if record.num_frames is None:
            decoded = probe_and_decode(
                record.path, lambda n: self._indices(n, rng), self.limits, resize_short_side=short_side
            )
            return decoded.clips
        clips = []
        for indices in self._indices(record.num_frames, rng):
            images = [self._read_image(record.path / self.image_template.format(i + 1)) for i in indices]
            clips.append(np.stack(images))
        return clips

    @staticmethod
    def _read_image(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clips = self._load(record, rng)
        return _views(
            clips,
            record.label,
            self.input_size,
            self.train,
            self.crops,
            rng,
            self.flip_pairs,
            self.crop_region,
        )


def _views(
    clips: list[np.ndarray],
    label: int,
    size: int,
    train: bool,
    crops: int,
    rng: np.random.Generator,
    flip_pairs: Mapping[int, int] | None,
    crop_region: str = "full",
) -> tuple[torch.Tensor, int]:
    if train:
        view, label = train_view(clips[0], label, size, rng, flip_pairs, crop_region)
        return torch.from_numpy(view[None]), label
    views = np.concatenate([eval_views(clip, size, crops) for clip in clips])
    return torch.from_numpy(views), label


class SyntheticDataset(Dataset):
    """Clips rendered on the fly by ``model.data.synthetic``: fresh clips every epoch in training
    (``set_epoch``), a fixed set for validation (its own seed)."""

    labels = SYNTHETIC_LABELS
    flip_pairs = FLIP_PAIRS

    def __init__(
        self,
        num_clips: int,
        *,
        num_frames: int,
        input_size: int,
        train: bool,
        seed: int,
        clips: int = 1,
        crops: int = 1,
        easy_epochs: int = 0,
        plain: bool = False,
        oversample: Mapping[int, float] | None = None,
        crop_region: str = "full",
    ) -> None:
        self.crop_region = crop_region
        self.num_clips, self.num_frames, self.input_size = num_clips, num_frames, input_size
        # Class c is drawn with weight oversample.get(c, 1); without it, clip i is class i % 12.
        weights = np.array([(oversample or {}).get(c, 1.0) for c in range(len(SYNTHETIC_LABELS))])
        if (weights <= 0).any():
            raise ValueError(f"oversampling factors must be positive: {dict(oversample or {})}")
        self.label_probabilities = weights / weights.sum() if oversample else None
        self.train, self.clips, self.crops, self.seed = train, clips, crops, seed
        self.easy_epochs = easy_epochs
        self.plain = plain
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def easy_fraction(self) -> float:
        """Share of plain renders (no clutter, distractors, noise): a curriculum that starts at 1 and
        falls linearly to 0 over ``easy_epochs``, so a network trained from scratch first finds the
        motion, then learns to ignore the nuisances. Validation is at full difficulty, unless the
        whole set is ``plain`` (train and validation)."""
        if self.plain:
            return 1.0
        if not self.train or self.easy_epochs <= 0:
            return 0.0
        return max(0.0, 1.0 - self.epoch / self.easy_epochs)

    def __len__(self) -> int:
        return self.num_clips

    def _stream(self, index: int) -> list[int]:
        return [self.seed, self.epoch if self.train else 0, index]

    def label_of(self, index: int) -> int:
        """The class of clip ``index`` this epoch: ``index % 12``, or a draw weighted by ``oversample``."""
        if self.label_probabilities is None:
            return index % len(SYNTHETIC_LABELS)
        rng = np.random.default_rng([*self._stream(index), 2])
        return int(rng.choice(len(SYNTHETIC_LABELS), p=self.label_probabilities))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        stream = self._stream(index)
        rng = np.random.default_rng([*stream, 1])
        label = self.label_of(index)
        plain = bool(rng.random() < self.easy_fraction)
        short_side = eval_resize_short_side(self.input_size)

        def sample(count: int) -> np.ndarray:
            if self.train:
                return sample_segment_indices(count, self.num_frames, "train", rng)
            return np.concatenate(
                [
                    sample_segment_indices(count, self.num_frames, "test", clip_index=k, num_clips=self.clips)
                    for k in range(self.clips)
                ]
            )

        # only the sampled frames are drawn (same pixels as the whole clip, 2-3x cheaper)
        clip = render_clip(
            label, np.random.default_rng(stream), short_side=short_side, plain=plain, select=sample
        )
        clips = list(clip.frames.reshape(-1, self.num_frames, *clip.frames.shape[1:]))
        return _views(
            clips, label, self.input_size, self.train, self.crops, rng, FLIP_PAIRS, self.crop_region
        )
