"""Realistic, deterministic test DICOM data for integration tests, the demo and the benchmark.

What lives here:

* ``ct_series`` / ``mr_series``: single-frame CT and MR series built from a synthetic body or
  head phantom plus noise, so that they compress like real scans (zlib ratio ~2.3-2.7) instead
  of like random bytes (~1) or like empty images (>>5). Transfer speed-ups measured on them are
  therefore meaningful.
* ``multiframe_instance``: one big multi-frame instance (tens of MiB), to exercise the
  splitting of large files into several chunks.
* ``mixed_study``: CT slices plus one multi-frame instance in one patient/study.
* ``pydicom_samples``: a fixed list of small files bundled with pydicom, covering many transfer
  syntaxes, each checked to be accepted by Orthanc 1.10.1 (and returned byte-identical).
* ``gzip_ratio`` / ``write_files``: small helpers.

Everything is derived from the ``seed`` argument only (no clock, no global RNG), so the same
call gives the same bytes on every run. ``python -m devkit.dicom_data`` prints a summary.
"""

from __future__ import annotations

import functools
import io
import pathlib
import sys
import time
import zlib
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
# Simplest multi-frame IOD: no functional groups needed, and Orthanc stores any SOP class.
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"

# pydicom test files that Orthanc 1.10.1 accepts on POST /instances and returns byte-identical,
# chosen so that no two of them map to the same Orthanc instance (several pydicom files share
# all their UIDs, e.g. the MR_small_* family, and the second upload would be "AlreadyStored").
PYDICOM_SAMPLE_FILES: tuple[str, ...] = (
    "CT_small.dcm",  # Explicit VR Little Endian
    "rtplan.dcm",  # Implicit VR Little Endian
    "liver_expb_1frame.dcm",  # Explicit VR Big Endian (segmentation)
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian (PatientID present but empty)
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "examples_ybr_color.dcm",  # JPEG Baseline, 30-frame US
    "JPEG-lossy.dcm",  # JPEG Extended
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "examples_jpeg2k.dcm",  # JPEG 2000 Lossless
    "693_J2KI.dcm",  # JPEG 2000
    "rtdose_rle.dcm",  # RLE Lossless, 15-frame RT dose
    "waveform_ecg.dcm",  # Explicit VR Little Endian, non-image (ECG waveform)
)
_MAX_SAMPLE_BYTES = 5 * 1024 * 1024

_PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=["transfers-accelerator devkit implementation"])

FloatImage = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]


def _uid(*parts: object) -> str:
    """Deterministic UID: generate_uid hashes its entropy sources (no randomness, no clock)."""
    return str(generate_uid(entropy_srcs=["transfers-accelerator devkit", *map(str, parts)]))


@functools.cache
def _normal_table() -> FloatImage:
    # Inverse-CDF table indexed by random uint16: ~3x faster than rng.standard_normal, which
    # matters because noise generation dominates the cost of a 200-slice series.
    quantiles = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
    inv = np.vectorize(NormalDist().inv_cdf, otypes=[np.float64])
    return np.asarray(inv(quantiles), dtype=np.float32)


def _gaussian(rng: np.random.Generator, shape: tuple[int, int]) -> FloatImage:
    idx = np.frombuffer(rng.bytes(2 * shape[0] * shape[1]), dtype=np.uint16)
    return np.take(_normal_table(), idx).reshape(shape)


def _grid(rows: int, columns: int) -> tuple[FloatImage, FloatImage]:
    """Normalised coordinates in [-1, 1]; y grows towards the patient's back (posterior)."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
    return np.broadcast_to(x, (rows, columns)), np.broadcast_to(y, (rows, columns))


def _ellipse(x: FloatImage, y: FloatImage, cx: float, cy: float, ax: float, ay: float) -> Mask:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _ct_anchor(x: FloatImage, y: FloatImage, t: float) -> FloatImage:
    """HU map of an axial slice at relative height t (0 = upper thorax, 1 = lower abdomen)."""
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    bw, bh = 0.86 - 0.10 * t, 0.56 + 0.06 * np.sin(np.pi * t)
    hu[_ellipse(x, y, 0.0, 0.05, bw, bh)] = -95.0  # subcutaneous fat
    hu[_ellipse(x, y, 0.0, 0.05, bw - 0.07, bh - 0.07)] = 40.0  # muscle / soft tissue
    # Gentle low-frequency texture so tissue is not perfectly flat (real organs never are).
    hu += np.where(hu > -500.0, 12.0 * np.sin(7.0 * x + 3.0 * t) * np.cos(5.0 * y), 0.0)
    lung = max(0.0, 1.0 - t / 0.55)  # lungs shrink and disappear at the diaphragm
    if lung > 0.05:
        for side in (-1.0, 1.0):
            hu[_ellipse(x, y, side * 0.38, 0.0, 0.26 * lung**0.5, 0.38 * lung**0.5)] = -860.0
    if t < 0.45:  # heart, slightly left
        hu[_ellipse(x, y, 0.10, -0.12, 0.22 * (1.0 - t), 0.18 * (1.0 - t))] = 45.0
    if t > 0.30:  # liver on the patient's right, spleen on the left
        grow = min(1.0, (t - 0.30) / 0.25)
        hu[_ellipse(x, y, -0.30, -0.02, 0.34 * grow, 0.30 * grow)] = 62.0
        hu[_ellipse(x, y, 0.42, 0.12, 0.12 * grow, 0.14 * grow)] = 50.0
    if t > 0.55:  # kidneys
        hu[_ellipse(x, y, -0.28, 0.30, 0.09, 0.13)] = 30.0
        hu[_ellipse(x, y, 0.28, 0.30, 0.09, 0.13)] = 30.0
    hu[_ellipse(x, y, 0.04, 0.22, 0.045, 0.045)] = 180.0  # aorta with contrast
    hu[_ellipse(x, y, 0.0, 0.40, 0.085, 0.085)] = 1100.0  # vertebral body, cortical shell
    hu[_ellipse(x, y, 0.0, 0.40, 0.065, 0.065)] = 280.0  # ... and cancellous core
    hu[_ellipse(x, y, 0.0, 0.53, 0.03, 0.05)] = 900.0  # spinous process
    if t < 0.6:  # ribs: a ring of small bony dots just under the muscle wall
        for angle in np.linspace(0.3, 2.0 * np.pi - 0.3, 14):
            rx, ry = 0.95 * (bw - 0.10) * np.sin(angle), 0.05 - 0.95 * (bh - 0.10) * np.cos(angle)
            hu[_ellipse(x, y, float(rx), float(ry), 0.025, 0.02)] = 750.0
    return hu


def _mr_anchor(x: FloatImage, y: FloatImage, t: float) -> FloatImage:
    """T1-like signal of an axial head slice at relative height t (0 = skull base, 1 = vertex)."""
    sig = np.zeros(x.shape, dtype=np.float32)
    s = float(np.sqrt(max(0.15, 1.0 - (t * 0.9) ** 2)))  # head narrows towards the vertex
    hx, hy = 0.72 * s, 0.88 * s
    sig[_ellipse(x, y, 0.0, 0.0, hx, hy)] = 950.0  # scalp fat, bright on T1
    sig[_ellipse(x, y, 0.0, 0.0, hx - 0.04, hy - 0.04)] = 60.0  # skull, dark
    sig[_ellipse(x, y, 0.0, 0.0, hx - 0.09, hy - 0.09)] = 620.0  # grey matter
    sig[_ellipse(x, y, 0.0, 0.0, hx - 0.17, hy - 0.17)] = 820.0  # white matter
    sig += np.where(sig > 500.0, 25.0 * np.sin(11.0 * x + 2.0 * t) * np.cos(9.0 * y), 0.0)
    vent = max(0.0, 1.0 - abs(t - 0.5) / 0.3)  # lateral ventricles around mid-height
    if vent > 0.05:
        for side in (-1.0, 1.0):
            sig[_ellipse(x, y, side * 0.09, -0.05, 0.05 * vent, 0.28 * vent)] = 260.0
    return sig


def _volume(
    anchor: str, count: int, rows: int, columns: int
) -> Iterator[tuple[FloatImage, FloatImage, float]]:
    """Yield (a, d, w) for each slice: the slice is a + w * d (d = next anchor - a).

    Drawing the phantom costs tens of ms, so it is drawn at a few anchor heights only and slices in
    between are linear blends; the blend also mimics partial-volume edges of real scanners.
    """
    x, y = _grid(rows, columns)
    draw = _ct_anchor if anchor == "ct" else _mr_anchor
    # MR anchors are cheap (256x256) and the head outline changes fast near the vertex, so use
    # more of them there to avoid visible double contours from blending.
    n_anchor = max(2, min(count, 8 if anchor == "ct" else 24))
    anchors = [draw(x, y, float(t)) for t in np.linspace(0.0, 1.0, n_anchor)]
    deltas = [anchors[k + 1] - anchors[k] for k in range(n_anchor - 1)]
    for i in range(count):
        pos = i * (n_anchor - 1) / max(1, count - 1)
        k = min(int(pos), n_anchor - 2)
        yield anchors[k], deltas[k], float(pos - k)


def _ct_stored(
    count: int, rows: int, columns: int, rng: np.random.Generator, padding: int
) -> Iterator[npt.NDArray[np.int16]]:
    """CT stored values (HU + 1024), with quantum noise and padding outside the scan circle."""
    x, y = _grid(rows, columns)
    outside_fov = x * x + y * y > 1.0
    for a, d, w in _volume("ct", count, rows, columns):
        hu = a + np.float32(w) * d
        # Noise ~14 HU in the body, ~5 HU in air: tuned for a whole-file zlib ratio ~2.5.
        noise = _gaussian(rng, hu.shape)
        noise *= np.where(hu > -900.0, np.float32(14.0), np.float32(5.0))
        hu += noise
        # In-place passes (this loop is the hot spot); +0.5 then truncation rounds to nearest.
        np.clip(hu, -1024.0, 3071.0, out=hu)
        hu += np.float32(1024.5)
        stored = hu.astype(np.int16)
        stored[outside_fov] = padding
        yield stored


def _mr_stored(
    count: int, rows: int, columns: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.uint16]]:
    for a, d, w in _volume("mr", count, rows, columns):
        sig = a + np.float32(w) * d
        # Magnitude of complex Gaussian noise: Rician in tissue, Rayleigh in the background.
        # sigma 12 in the head, 2 outside (scanners filter the background): zlib ratio ~2.5.
        sigma = np.where(sig > 30.0, np.float32(12.0), np.float32(2.0))
        re = sig + sigma * _gaussian(rng, sig.shape)
        im = sigma * _gaussian(rng, sig.shape)
        yield np.clip(np.rint(np.hypot(re, im)), 0.0, 4095.0).astype(np.uint16)


def _base_dataset(
    sop_class: str, patient_id: str, ids: tuple[str, str, str], bits_stored: int
) -> FileDataset:
    """Patient/study/series/image-pixel attributes shared by all instances of a series.

    Built once per series and mutated per slice: constructing a pydicom Dataset element by
    element costs about as much as generating the pixels.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TF_DEVKIT_1"
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    # Fixed dates/times: the bytes must not depend on when the data was generated.
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber, ds.ReferringPhysicianName = "TFACC" + patient_id[-4:], ""
    ds.PatientName, ds.PatientID = f"TEST^{patient_id}", patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyID = ids[0], ids[1], "1"
    ds.StudyDescription = "Transfers accelerator test study"
    ds.Manufacturer = "TransfersAcceleratorDevkit"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    return ds


def _encode(
    ds: FileDataset, sop_uid: str, pixels: npt.NDArray[np.int16] | npt.NDArray[np.uint16]
) -> bytes:
    """Part-10 bytes; Rows/Columns/PixelRepresentation come from the pixel array itself."""
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.add_new(0x7FE00010, "OW", pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
    buf = io.BytesIO()
    if _PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:  # pydicom 2.x encodes from the dataset flags, not from the file meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(buf, ds, write_like_original=False)
    return buf.getvalue()


def _ids(kind: str, seed: int, patient_id: str, study_uid: str | None) -> tuple[str, str, str]:
    """(study, series, frame of reference) UIDs; the study is shared when study_uid is given."""
    study = study_uid or _uid("study", patient_id, seed)
    return study, _uid(kind, "series", patient_id, study, seed), _uid(kind, "for", study, seed)


def ct_series(
    count: int,
    *,
    rows: int = 512,
    columns: int = 512,
    seed: int = 0,
    patient_id: str = "TF-CT-0001",
    study_uid: str | None = None,
) -> list[bytes]:
    """``count`` axial CT slices (CT Image Storage, signed 16-bit, Explicit VR Little Endian)."""
    ids = _ids("ct", seed, patient_id, study_uid)
    rng = np.random.default_rng(seed)
    spacing = 350.0 / max(rows, columns)  # 35 cm field of view
    ds = _base_dataset(CT_IMAGE_STORAGE, patient_id, ids, 16)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 2, "Thorax-abdomen 2.5mm"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ids[2], ""
    ds.AcquisitionNumber, ds.ImageOrientationPatient = 1, [1, 0, 0, 0, 1, 0]
    ds.SliceThickness, ds.PixelSpacing = 2.5, [round(spacing, 6), round(spacing, 6)]
    ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
    ds.PixelPaddingValue = -2000  # GE-style padding outside the reconstruction circle
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    out: list[bytes] = []
    for i, stored in enumerate(_ct_stored(count, rows, columns, rng, padding=-2000)):
        z = -100.0 - 2.5 * i  # head-first supine: moving caudally, z decreases
        ds.InstanceNumber, ds.SliceLocation, ds.ImagePositionPatient = i + 1, z, [-175.0, -175.0, z]
        out.append(_encode(ds, _uid("ct", ids[1], i), stored))
    return out


def noise_instance(*, rows: int = 256, columns: int = 256, seed: int = 0) -> bytes:
    """One CT slice whose pixels are uniform noise: it does not compress (ratio ~1.0),
    like already-compressed pixel data, whatever pydicom's bundled files are."""
    ids = _ids("noise", seed, "TF-NOISE-0001", None)
    ds = _base_dataset(CT_IMAGE_STORAGE, "TF-NOISE-0001", ids, 16)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 9, 1
    stored = np.random.default_rng(seed).integers(-32768, 32767, (rows, columns), dtype=np.int16,
                                                  endpoint=True)
    return _encode(ds, _uid("noise", ids[1], 0), stored)


def mr_series(
    count: int,
    *,
    rows: int = 256,
    columns: int = 256,
    seed: int = 1,
    patient_id: str = "TF-MR-0001",
    study_uid: str | None = None,
) -> list[bytes]:
    """``count`` axial T1-like head MR slices (MR Image Storage, unsigned 12-bit in 16)."""
    ids = _ids("mr", seed, patient_id, study_uid)
    rng = np.random.default_rng(seed)
    ds = _base_dataset(MR_IMAGE_STORAGE, patient_id, ids, 12)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", 3, "T1 SE axial"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ids[2], ""
    ds.AcquisitionNumber, ds.ImageOrientationPatient = 1, [1, 0, 0, 0, 1, 0]
    ds.SliceThickness, ds.SpacingBetweenSlices = 5.0, 5.0
    ds.PixelSpacing = [round(240.0 / rows, 6), round(240.0 / columns, 6)]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
    ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime = "2D", 500.0, 12.0
    ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 1.5
    ds.WindowCenter, ds.WindowWidth = 600, 1200
    out: list[bytes] = []
    for i, stored in enumerate(_mr_stored(count, rows, columns, rng)):
        z = 5.0 * i
        ds.InstanceNumber, ds.SliceLocation, ds.ImagePositionPatient = i + 1, z, [-120.0, -120.0, z]
        out.append(_encode(ds, _uid("mr", ids[1], i), stored))
    return out


def multiframe_instance(
    size_mb: float,
    *,
    seed: int = 2,
    patient_id: str = "TF-MF-0001",
    study_uid: str | None = None,
) -> bytes:
    """One Multi-frame Grayscale Word SC instance of 512x512 CT-like frames, ~``size_mb`` MiB."""
    rows = columns = 512
    frames = max(1, round(size_mb * 1024 * 1024 / (rows * columns * 2)))
    ids = _ids("mf", seed, patient_id, study_uid)
    rng = np.random.default_rng(seed)
    volume = np.empty((frames, rows, columns), dtype=np.uint16)
    # Multi-frame Grayscale Word SC requires unsigned pixels: pad with 0 (= -1024 HU).
    for k, stored in enumerate(_ct_stored(frames, rows, columns, rng, padding=0)):
        volume[k] = stored
    ds = _base_dataset(MULTIFRAME_GRAYSCALE_WORD_SC, patient_id, ids, 12)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "OT", 100, "Multi-frame CT volume"
    ds.ConversionType, ds.InstanceNumber = "WSD", 1
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00182005  # Slice Location Vector
    ds.SliceLocationVector = [round(-2.5 * k, 3) for k in range(frames)]
    ds.PixelSpacing = [0.683594, 0.683594]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    return _encode(ds, _uid("mf", ids[1]), volume)


def pydicom_samples() -> list[bytes]:
    """Bytes of the pydicom-bundled files in ``PYDICOM_SAMPLE_FILES`` (missing ones skipped).

    Read straight from the package directory: get_testdata_file may try to download files.
    """
    base = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"
    paths = [base / name for name in PYDICOM_SAMPLE_FILES]
    out = [p.read_bytes() for p in paths if p.is_file() and p.stat().st_size <= _MAX_SAMPLE_BYTES]
    if len(out) < 6:
        raise RuntimeError(f"only {len(out)} pydicom sample files found under {base}")
    return out


def mixed_study(*, ct_slices: int = 20, multiframe_mb: float = 20.0, seed: int = 0) -> list[bytes]:
    """CT slices plus one large multi-frame instance, all in one patient and one study."""
    patient_id = f"TF-MIX-{seed:04d}"
    study = _uid("mixed-study", patient_id, seed)
    big = multiframe_instance(multiframe_mb, seed=seed, patient_id=patient_id, study_uid=study)
    return [*ct_series(ct_slices, seed=seed, patient_id=patient_id, study_uid=study), big]


def gzip_ratio(files: list[bytes]) -> float:
    """Total raw bytes / total zlib (level 6) compressed bytes."""
    raw = sum(len(f) for f in files)
    packed = sum(len(zlib.compress(f, 6)) for f in files)
    return raw / packed if packed else 1.0


def write_files(files: list[bytes], directory: pathlib.Path) -> list[pathlib.Path]:
    """Write files as ``00000.dcm``, ``00001.dcm``... into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{i:05d}.dcm" for i in range(len(files))]
    for path, data in zip(paths, files, strict=True):
        path.write_bytes(data)
    return paths


def _transfer_syntaxes(files: list[bytes]) -> list[str]:
    metas = (pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).file_meta for f in files)
    return sorted({str(meta.TransferSyntaxUID.name) for meta in metas})


def _main() -> int:
    jobs = {
        "ct_series(50)": lambda: ct_series(50),
        "mr_series(20)": lambda: mr_series(20),
        "multiframe_instance(20)": lambda: [multiframe_instance(20)],
        "pydicom_samples()": pydicom_samples,
    }
    for label, make in jobs.items():
        start = time.perf_counter()
        files = make()
        elapsed = time.perf_counter() - start
        size_mb = sum(len(f) for f in files) / (1024 * 1024)
        print(
            f"{label:24s} {len(files):3d} files {size_mb:8.2f} MiB  gzip ratio "
            f"{gzip_ratio(files):5.2f}  {elapsed:5.2f} s  {', '.join(_transfer_syntaxes(files))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
