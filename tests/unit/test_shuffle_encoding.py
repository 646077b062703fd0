"""The shuffle-zstd encoding: byte-identical on every offset and transfer syntax, smaller
than zstd on 16-bit pixel data, chosen only where it helps, and strict on bad input."""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest
from orthanc_transfers import encoding
from orthanc_transfers.chooser import EncodingChooser
from orthanc_transfers.encoding import (
    Encoding,
    adapt,
    decode,
    encode,
    sample,
)
from orthanc_transfers.errors import BadRequest, IntegrityError, UnsupportedEncoding

from devkit import dicom_data

pytestmark = pytest.mark.skipif(encoding.zstandard is None, reason="python3-zstandard missing")

CT = dicom_data.ct_series(2, seed=7)[1]
MR = dicom_data.mr_series(2, seed=7)[1]
SAMPLES = dicom_data.pydicom_samples()


def rgb_image() -> bytes:
    """8-bit RGB pixels (a noisy colour gradient): the shuffle interleaves nothing useful."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:300, 0:400]
    image = np.stack([(x * 0.5 + y * 0.2) % 256, (y * 0.6) % 256, (x * 0.3 + 40) % 256], -1)
    return bytes(np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8))


RGB = rgb_image()


SHUFFLED = [Encoding.SHUFFLE_ZSTD, Encoding.SHUFFLE_XZ]


def shuffled_round_trip(data: bytes, level: int = 3,
                        encoding: Encoding = Encoding.SHUFFLE_ZSTD) -> bytes:
    payload = encode(data, encoding, level)
    assert decode(payload, encoding, len(data)) == data
    return payload


@pytest.mark.parametrize("encoding", SHUFFLED, ids=lambda e: e.value)
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 65_537, 300_001])
@pytest.mark.parametrize("offset", [0, 1, 2, 4097])
def test_round_trip_on_any_size_and_offset(size: int, offset: int, encoding: Encoding) -> None:
    shuffled_round_trip(CT[offset:offset + size], 1, encoding)


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_every_transfer_syntax_of_the_test_data_round_trips(index: int) -> None:
    data = SAMPLES[index]
    for start in (0, 1, 333, len(data) // 2 + 1):
        piece = data[start:start + 262_145]           # odd sizes, odd and even starts
        shuffled_round_trip(piece)
        adapted = adapt(Encoding.SHUFFLE_ZSTD, piece)
        assert decode(encode(piece, adapted, 3), adapted, len(piece)) == piece


def test_pixel_data_starts_at_an_even_offset_in_the_file() -> None:
    checked = 0
    for data in (CT, MR, *SAMPLES):
        dataset = pydicom.dcmread(io.BytesIO(data))
        deflated = dataset.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
        pixels = dataset.get_item("PixelData")
        if pixels is None or deflated:         # a deflated file has no pixel data offset
            continue
        assert pixels.value_tell % 2 == 0
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("data", [CT, MR], ids=["ct", "mr"])
def test_sixteen_bit_pixels_shrink_well_below_zstd(data: bytes) -> None:
    shuffled = shuffled_round_trip(data)
    plain = encode(data, Encoding.ZSTD, 3)
    assert len(shuffled) < 0.9 * len(plain)
    assert sample(data).shuffle_helps


def test_a_bucket_starting_mid_sample_compresses_as_well() -> None:
    # Started at an odd offset, the high bytes come first: both planes are still clean.
    aligned = len(shuffled_round_trip(CT[4096:-1]))
    mid_sample = len(shuffled_round_trip(CT[4097:]))
    assert mid_sample < 1.03 * aligned


def test_adapt_sends_plain_for_noise_and_zstd_where_the_shuffle_does_not_help() -> None:
    noise = dicom_data.noise_instance()
    assert adapt(Encoding.SHUFFLE_ZSTD, os.urandom(300_000)) is Encoding.NONE
    assert adapt(Encoding.SHUFFLE_ZSTD, noise[len(noise) // 4:]) is Encoding.NONE
    assert not sample(RGB).shuffle_helps
    assert adapt(Encoding.SHUFFLE_ZSTD, RGB) is Encoding.ZSTD
    assert adapt(Encoding.SHUFFLE_ZSTD, CT) is Encoding.SHUFFLE_ZSTD
    assert adapt(Encoding.GZIP, CT) is Encoding.GZIP        # never an unasked codec
    assert adapt(Encoding.NONE, CT) is Encoding.NONE


@pytest.mark.parametrize("encoding", SHUFFLED, ids=lambda e: e.value)
def test_corrupt_payloads_are_clear_integrity_errors(encoding: Encoding) -> None:
    payload = encode(CT, encoding, 1)
    broken = [b"", b"\x04" + payload[1:], b"\x02", payload[:len(payload) // 2],
              payload[:40] + bytes(b ^ 0xFF for b in payload[40:80]) + payload[80:]]
    for bad in broken:
        with pytest.raises(IntegrityError, match=r"zstd|xz|expected|bytes"):
            decode(bad, encoding, len(CT))
    with pytest.raises(IntegrityError):
        decode(payload, encoding, len(CT) - 1)
    bomb = encode(b"\0" * 50_000_000, encoding, 1)
    with pytest.raises(IntegrityError):
        decode(bomb, encoding, 1000)


def test_without_zstandard_the_encoding_is_neither_announced_nor_decoded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    payload = encode(CT, Encoding.SHUFFLE_ZSTD, 3)
    monkeypatch.setattr(encoding, "zstandard", None)
    assert "shuffle-zstd" not in encoding.local_encodings()
    with pytest.raises(UnsupportedEncoding, match="python3-zstandard") as raised:
        decode(payload, Encoding.SHUFFLE_ZSTD, len(CT))
    assert isinstance(raised.value, BadRequest) and not isinstance(raised.value, IntegrityError)


def chooser(encodings: set[str]) -> EncodingChooser:
    return EncodingChooser("gzip", frozenset(encodings), gzip_level=1, threads=4, cores=2)


def measured(encodings: set[str], link_bytes_per_second: float) -> EncodingChooser:
    chosen = chooser(encodings)
    for _ in range(20):                                     # 4 requests share the link
        chosen.observe_network(4_000_000, 4_000_000 / (link_bytes_per_second / 4))
    return chosen


def test_pixel_data_is_shuffled_and_other_data_is_not() -> None:
    everything = set(encoding.local_encodings())
    for link in (2.5e6, 12.5e6):                           # 20 and 100 Mbit/s
        assert measured(everything, link).choose(CT)[0].shuffled
        assert measured(everything, link).choose(None)[0].shuffled   # pull: the source adapts
        assert not measured(everything, link).choose(RGB)[0].shuffled
    assert measured(everything - {"shuffle-zstd", "shuffle-xz"}, 2.5e6).choose(CT)[0] \
        in (Encoding.ZSTD, Encoding.XZ)
    assert chooser({"gzip", "none"}).choose(CT)[0] is Encoding.GZIP


def test_the_codec_follows_the_link_and_the_cores() -> None:
    everything = set(encoding.local_encodings())
    # 20 Mbit/s: the link is the bottleneck; xz's ratio pays and one core keeps up.
    assert measured(everything, 2.5e6).choose(CT)[0] is Encoding.SHUFFLE_XZ
    # 100 Mbit/s: xz cannot keep up (13-22 MB/s a core); fast shuffle-zstd does.
    assert measured(everything, 12.5e6).choose(CT)[0] is Encoding.SHUFFLE_ZSTD
    # Loopback: nothing beats sending plain bytes.
    assert measured(everything, 1.6e9).choose(CT)[0] is Encoding.NONE
    # Without zstandard: shuffle-xz on the thin link, fast gzip-1 on the fat one.
    no_zstd = {"shuffle-xz", "xz", "gzip", "none"}
    assert measured(no_zstd, 2.5e6).choose(CT)[0] is Encoding.SHUFFLE_XZ
    assert measured(no_zstd, 12.5e6).choose(CT)[0] is Encoding.GZIP
