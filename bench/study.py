"""The benchmark study: synthetic CT slices plus multi-frame instances, in one study."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pydicom.uid import generate_uid

from devkit import dicom_data

#: Largest multi-frame instance, MiB; more multi-frame data means more instances.
MULTIFRAME_INSTANCE_MB = 40.0

#: name -> (CT slices of ~525 KB, MiB of multi-frame data)
SIZES: dict[str, tuple[int, float]] = {
    "small": (60, 30.0),       # ~63 MB: the quick default
    "default": (200, 80.0),    # ~189 MB: ct_series(200) + 2 x multiframe_instance(40)
    "large": (500, 160.0),     # ~432 MB
}

PATIENT_ID = "TF-BENCH-0001"


@dataclass
class Study:
    label: str
    files: list[bytes]
    slices: int
    multiframe_sizes: list[float]
    gzip_ratio: float
    build_seconds: float

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.files)

    @property
    def megabytes(self) -> float:
        return self.size / 1e6

    def describe(self) -> str:
        frames = " + ".join(f"multiframe_instance({mb:g})" for mb in self.multiframe_sizes)
        parts = [f"ct_series({self.slices})"] + ([frames] if frames else [])
        return (f"{' + '.join(parts)}: {len(self.files)} instances, {self.megabytes:.1f} MB, "
                f"zlib-6 ratio {self.gzip_ratio:.2f}")


def multiframe_sizes(total_mb: float) -> list[float]:
    """``total_mb`` of multi-frame data cut into instances of at most 40 MiB."""
    if total_mb <= 0:
        return []
    count = math.ceil(total_mb / MULTIFRAME_INSTANCE_MB)
    return [total_mb / count] * count


def build_study(slices: int, multiframe_mb: float, label: str) -> Study:
    """Deterministic bytes: the same arguments give the same study on every run."""
    started = time.perf_counter()
    study_uid = str(generate_uid(entropy_srcs=["transfers-accelerator bench", PATIENT_ID]))
    files = dicom_data.ct_series(slices, patient_id=PATIENT_ID, study_uid=study_uid) \
        if slices > 0 else []
    sizes = multiframe_sizes(multiframe_mb)
    for k, mb in enumerate(sizes):
        files.append(dicom_data.multiframe_instance(mb, seed=100 + k, patient_id=PATIENT_ID,
                                                    study_uid=study_uid))
    if not files:
        raise ValueError("the study is empty: give --slices or --multiframe-mb")
    ratio = dicom_data.gzip_ratio(files)
    return Study(label, files, slices, sizes, ratio, time.perf_counter() - started)
