"""Bucket encodings and the chooser that adapts them to the measured link."""

from __future__ import annotations

import os
import zlib

import pytest
from orthanc_transfers.chooser import EncodingChooser
from orthanc_transfers.encoding import (
    Encoding,
    decode,
    encode,
    local_encodings,
    sample,
)
from orthanc_transfers.errors import IntegrityError

# Compressible like an image: a smooth ramp with a little noise.
IMAGE = bytes((i // 64 + (i * 7919) % 5) % 256 for i in range(300_000))
NOISE = os.urandom(300_000)                       # like JPEG data: does not compress


@pytest.mark.parametrize("name", local_encodings())
def test_round_trip(name: str) -> None:
    encoding = Encoding(name)
    payload = encode(IMAGE, encoding, 1)
    assert decode(payload, encoding, len(IMAGE)) == IMAGE
    if encoding is not Encoding.NONE:
        assert len(payload) < len(IMAGE) / 2


@pytest.mark.parametrize("name", [n for n in local_encodings() if n != "none"])
def test_decode_refuses_wrong_sizes_corruption_and_bombs(name: str) -> None:
    encoding = Encoding(name)
    payload = encode(IMAGE, encoding, 1)
    with pytest.raises(IntegrityError):
        decode(payload, encoding, len(IMAGE) - 1)
    with pytest.raises(IntegrityError):
        decode(payload, encoding, len(IMAGE) + 1)
    with pytest.raises(IntegrityError):
        decode(payload[: len(payload) // 2], encoding, len(IMAGE))
    bomb = encode(b"\0" * 50_000_000, encoding, 1)
    with pytest.raises(IntegrityError):
        decode(bomb, encoding, 1000)


def test_gzip_is_a_single_member_any_peer_reads() -> None:
    payload = encode(IMAGE, Encoding.GZIP, 1)
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(payload) == IMAGE and inflater.eof


def test_compresses_tells_images_from_noise() -> None:
    assert sample(IMAGE).compresses
    assert not sample(NOISE).compresses
    assert not sample(b"").compresses


def chooser(wanted: str = "gzip", encodings: frozenset[str] = frozenset(local_encodings())
            ) -> EncodingChooser:
    return EncodingChooser(wanted, encodings, gzip_level=1, threads=4, cores=2)


def test_original_peers_get_exactly_what_was_asked() -> None:
    for data in (IMAGE, NOISE, None):
        assert chooser("gzip", frozenset()).choose(data) == (Encoding.GZIP, 1)
        assert chooser("none", frozenset()).choose(data)[0] is Encoding.NONE
    assert not chooser("gzip", frozenset()).adaptive


def test_none_is_never_compressed() -> None:
    assert chooser("none").choose(IMAGE)[0] is Encoding.NONE


def test_incompressible_buckets_go_plain() -> None:
    assert chooser().choose(NOISE)[0] is Encoding.NONE


def test_slow_links_compress_fast_links_do_not() -> None:
    slow = chooser()
    assert slow.choose(IMAGE)[0] is not Encoding.NONE          # assumed slow at first
    for _ in range(20):
        slow.observe_network(4_000_000, 4_000_000 / 0.6e6)       # wan20 over 4 requests
    assert slow.choose(IMAGE)[0] is not Encoding.NONE
    fast = chooser()
    for _ in range(20):
        fast.observe_network(4_000_000, 4_000_000 / 400e6)       # loopback
    assert fast.choose(IMAGE)[0] is Encoding.NONE


def test_only_encodings_both_sides_know_are_used() -> None:
    gzip_only = chooser(encodings=frozenset({"gzip", "none"}))
    assert gzip_only.choose(IMAGE)[0] is Encoding.GZIP


def test_small_or_empty_observations_are_ignored() -> None:
    c = chooser()
    before = c.link_rate
    c.observe_network(100, 0.000001)
    c.observe_network(1_000_000, 0.0)
    c.observe_encoding(Encoding.NONE, 0, 1_000_000, 1_000_000, 0.1)
    assert c.link_rate == before


def lan_chooser() -> EncodingChooser:
    return EncodingChooser("gzip", frozenset(local_encodings()), gzip_level=1, threads=4,
                           cores=2, rtt=0.0005)


def test_on_a_lan_buckets_follow_what_measured_faster_end_to_end() -> None:
    # The peer's queue makes the link look slow: the model alone would compress.
    lan = lan_chooser()
    for _ in range(20):
        lan.observe_network(4_000_000, 4_000_000 / 10e6)
    assert lan.choose(IMAGE)[0] is not Encoding.NONE
    lan.observe_bucket(Encoding.ZSTD, 4_000_000, 0.08)          # 50 MB/s compressed
    lan.observe_bucket(Encoding.NONE, 4_000_000, 0.02)          # 200 MB/s plain
    chosen = [lan.choose(IMAGE)[0] for _ in range(12)]
    assert chosen.count(Encoding.NONE) == 10                    # one probe in six
    lan.observe_bucket(Encoding.ZSTD, 4_000_000, 0.004)        # compressed got faster
    lan.observe_bucket(Encoding.ZSTD, 4_000_000, 0.004)
    lan.observe_bucket(Encoding.ZSTD, 4_000_000, 0.004)
    assert [lan.choose(IMAGE)[0] for _ in range(5)].count(Encoding.NONE) <= 1


def test_off_a_lan_there_are_no_plain_probes() -> None:
    wan = EncodingChooser("gzip", frozenset(local_encodings()), gzip_level=1, threads=4,
                          cores=2, rtt=0.08)
    for _ in range(20):
        wan.observe_network(4_000_000, 4_000_000 / 0.6e6)
    wan.observe_bucket(Encoding.NONE, 4_000_000, 0.001)
    assert all(wan.choose(IMAGE)[0] is not Encoding.NONE for _ in range(24))
