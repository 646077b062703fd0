"""Hostile-input fuzzing of every route of the plugin, against real Orthanc servers.

Properties (hypothesis, derandomized so that CI is reproducible, no shrinking so that
the run stays bounded; every property collects *all* its failing inputs and reports
the shortest ones of each kind, with a request that reproduces them):

1. Any body, query and path on any route: never a 500 nor a dropped connection;
   4xx bodies are Orthanc-style JSON (``HttpStatus``, ``Message``) without traceback;
   2xx bodies are JSON (except chunk bodies); the servers stay healthy and their logs
   hold no traceback of the plugin.
2. Push transactions: declared sizes up to ``MaxInstanceSize`` are accepted without
   using disk (sparse files) and are cleaned by DELETE, larger ones are refused;
   a PUT body of the wrong length, a corrupted stream, a decompression bomb or an
   unknown ``X-Transfers-Encoding`` is a 400, without the receiver's memory jumping.
3. Chunks: malformed ``offset``/``size``/``level``/``compression`` are 400; valid ones
   answer exactly the slice of the concatenated instance files.
4. Nothing is written under a server's directory outside its staging directory
   (Orthanc's own storage and index aside).
5. Unknown job and transaction IDs of every shape are 404 (or 400), never 500.

Orthanc decodes and normalizes request paths itself (``%2F`` becomes ``/``, ``..``
and ``.`` segments are resolved, a NUL byte ends the path), so an ID that contains
them reaches Orthanc's own routes, not the plugin: property 5 keeps such IDs out,
property 1 includes them (any answer but a 500 is fine there).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from devkit.fuzzing.calls import (
    TALLY,
    Call,
    Findings,
    alive,
    check_call,
    fuzz_settings,
    perform,
    q,
)
from devkit.fuzzing.inputs import (
    ENCODING_HEADER,
    HOSTILE_SEGMENTS,
    MAX_CHUNK_ARGUMENT,
    MAX_INSTANCE_SIZE,
    OUR_ENCODINGS,
    TEXT,
    VALID_CHUNK_ARGS,
    GiB,
    KiB,
    MiB,
    bad_numbers,
    bodies,
    declared_sizes,
    decode,
    dumps,
    encode,
    encode_query,
    gzip_zeros,
    near_valid_query,
    plugin_reaches,
    query_args,
    route_specs,
    segments,
    unknown_ids,
    weighted,
    zstd_forged_content_size,
    zstd_zeros,
)
from devkit.fuzzing.server_state import (
    STAGING,
    LogWatch,
    PeakRss,
    Snapshot,
    assert_servers_sound,
    disk_usage,
    snapshot,
)
from devkit.orthanc_server import OrthancServer, md5_hex

# The properties' bodies keep the names they had before this support code moved to the
# devkit: derandomized hypothesis seeds each property from its source text, so renaming
# a call there would change every example it draws.
_stat = TALLY.add
_encode = encode
_decode = decode

# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _track_test(request: pytest.FixtureRequest) -> Iterator[None]:
    TALLY.test = request.node.name
    yield
    TALLY.test = "(teardown)"


@pytest.fixture(scope="module", autouse=True)
def _print_stats(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = TALLY.summary(time.monotonic() - started)
    # Printed past pytest's capture, so that it shows with -q too.
    with capture.global_and_fixture_disabled() if capture is not None \
            else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


@dataclass
class Fuzz:
    a: OrthancServer                     # source and general target
    b: OrthancServer                     # push receiver of properties 2
    ids: list[str]                       # three real instances on a (and files for b)
    files: dict[str, bytes]
    tx: str                              # a push transaction held open on a
    job: str                             # a finished transfer job on a
    start: dict[str, Snapshot]
    logs: dict[str, LogWatch]

    @property
    def servers(self) -> tuple[OrthancServer, OrthancServer]:
        return self.a, self.b


SHARED_TX_INSTANCE = "feedc0de"


@pytest.fixture(scope="module")
def fuzz(pair: tuple[OrthancServer, OrthancServer], sample_files: list[bytes]) -> Fuzz:
    a, b = pair
    a.wipe()
    b.wipe()
    chosen = sorted(sample_files, key=len)[-5:-2]          # three files of 36-160 KB
    ids = a.upload(chosen)
    files = {i: a.get(f"/instances/{i}/file").content for i in ids}
    assert len(set(ids)) == 3 and all(files.values())
    created = a.post("/transfers/push", json={
        "Instances": [{"ID": SHARED_TX_INSTANCE, "Size": "32", "MD5": "0" * 32}],
        "Buckets": [[{"ID": SHARED_TX_INSTANCE, "Offset": "0", "Size": "16"}],
                    [{"ID": SHARED_TX_INSTANCE, "Offset": "16", "Size": "16"}]],
        "Compression": "none"})
    assert created.status_code == 200, created.text
    pulled = a.post("/transfers/pull", json={
        "Resources": [{"Level": "Study", "ID": "0123456789abcdef"}], "Peer": "b",
        "Compression": "none"})
    assert pulled.status_code == 200, pulled.text
    job = pulled.json()["ID"]
    a.wait_job(job, timeout=30)
    return Fuzz(a=a, b=b, ids=ids, files=files, tx=created.json()["ID"], job=job,
                start={s.name: snapshot(s) for s in pair},
                logs={s.name: LogWatch(s) for s in pair})


# == Property 1: every route, any input ===================================================


def _fresh_transaction(server: OrthancServer) -> str:
    response, _ = perform(server, Call("POST", "/transfers/push", dumps({
        "Instances": [{"ID": "abcd", "Size": "8", "MD5": "0" * 32}],
        "Buckets": [[{"ID": "abcd", "Offset": "0", "Size": "8"}]], "Compression": "gzip"})))
    assert response is not None and response.status_code == 200, \
        response.text if response is not None else "no answer"
    tx: str = response.json()["ID"]
    return tx


def test_every_route_survives_hostile_input(fuzz: Fuzz) -> None:
    """Property 1 (with 4 for both servers): no 500, sane bodies, healthy, clean logs."""
    a = fuzz.a
    findings = Findings()
    specs = route_specs(fuzz.ids[0])
    before = {s.name: snapshot(s) for s in fuzz.servers}
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    # Mostly the real thing, so that most requests get past the first check.
    placeholders: dict[str, st.SearchStrategy[str]] = {
        "ids": weighted((2, st.just(".".join(fuzz.ids))),
                        (4, st.lists(st.sampled_from(fuzz.ids), min_size=1,
                                     max_size=4).map(".".join)),
                        (3, segments())),
        "tx": weighted((7, st.just(fuzz.tx)), (3, segments())),
        "n": weighted((7, st.sampled_from(["0", "1", "2"])), (3, segments())),
        "job": weighted((6, st.just(fuzz.job)), (4, segments())),
        "action": st.sampled_from(["pause", "resume", "cancel", "resubmit"]),
    }
    query_keys = ["offset", "size", "compression", "level", "expand", "limit", "since"]

    @fuzz_settings(400)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _stat("examples")
        spec = data.draw(st.sampled_from(specs), "route")
        path = spec.template
        for name, strategy in placeholders.items():
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", q(data.draw(strategy, name)))
        if spec.template.startswith("/transfers/chunks/"):
            query = data.draw(weighted((7, near_valid_query(VALID_CHUNK_ARGS)),
                                       (3, query_args(query_keys))), "query")
        else:
            query = data.draw(query_args(query_keys), "query")
        path += encode_query(query)
        body = data.draw(bodies(spec.body), "body")
        # No stray DELETE on the transaction held open for the whole module.
        methods = ["GET", "POST", "PUT"] if "{tx}" in spec.template else \
            ["GET", "POST", "PUT", "DELETE"]
        method = data.draw(st.sampled_from([spec.method] * 12 + methods), "method")
        headers: dict[str, str] = {}
        if spec.method == "PUT":
            encoding = data.draw(st.sampled_from(
                [None, None, None, "gzip", "zstd", "none", "br", "", "GZIP", "x" * 1000]),
                "encoding")
            if encoding is not None:
                headers[ENCODING_HEADER] = encoding
        # Created after the last draw: a draw may end the example early.
        fresh = _fresh_transaction(a) if "{fresh_tx}" in path else None
        if fresh is not None:
            path = path.replace("{fresh_tx}", fresh)
        try:
            call = Call(method, path, body, headers, route=spec.template)
            response = check_call(findings, a, call, binary_ok=spec.binary_ok)
            if response is not None and response.status_code == 200 and method == "POST" \
                    and spec.template == "/transfers/push":
                # Keep MaxPushTransactions free: discard what the fuzzer managed to open.
                perform(a, Call("DELETE", f"/transfers/push/{q(response.json()['ID'])}"))
        finally:
            if fresh is not None:
                perform(a, Call("DELETE", f"/transfers/push/{fresh}"))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("hostile input on every route")


# == Property 5: unknown job and transaction IDs ==========================================


def test_unknown_ids_answer_404_or_400(fuzz: Fuzz) -> None:
    """Property 5."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    routes = [("GET", "/jobs/{}"), ("POST", "/jobs/{}/pause"), ("POST", "/jobs/{}/resume"),
              ("POST", "/jobs/{}/cancel"), ("POST", "/jobs/{}/resubmit"),
              ("GET", "/transfers/push/{}"), ("DELETE", "/transfers/push/{}"),
              ("PUT", "/transfers/push/{}/0"), ("POST", "/transfers/push/{}/commit"),
              ("GET", "/transfers/chunks/{}")]

    @fuzz_settings(250)
    @given(route=st.sampled_from(routes), segment=unknown_ids())
    @example(route=("GET", "/jobs/{}"), segment=q("?expand"))
    @example(route=("POST", "/jobs/{}/pause"), segment="%FF")
    @example(route=("GET", "/jobs/{}"), segment="%FF")
    @example(route=("GET", "/transfers/push/{}"), segment="%FF")
    @example(route=("GET", "/transfers/chunks/{}"), segment="%FF")
    def run(route: tuple[str, str], segment: str) -> None:
        _stat("examples")
        method, template = route
        body = b"\x1f\x8b" if method == "PUT" else b""
        call = Call(method, template.format(segment), body, route=template.format("<id>"))
        check_call(findings, fuzz.a, call, binary_ok=True, expect=(400, 404))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("unknown IDs")


def test_bucket_indexes_of_every_shape(fuzz: Fuzz) -> None:
    """Property 5 for the bucket number of ``PUT /transfers/push/<tx>/<n>`` on a real
    transaction of two buckets: anything but the ASCII digits of 0 or 1 is a 404/400."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}

    def valid(index: str) -> bool:
        # At most 9 digits are read as a bucket number; longer ones are refused (404).
        return re.fullmatch("0{0,8}[01]", index) is not None

    indexes = st.one_of(bad_numbers(), st.integers(2, 2**70).map(str),
                        st.text(st.characters(codec="utf-8"), min_size=1, max_size=12),
                        st.sampled_from(HOSTILE_SEGMENTS)).filter(plugin_reaches)

    @fuzz_settings(120)
    @given(index=indexes)
    @example(index="\u0660")                  # ARABIC-INDIC DIGIT ZERO
    @example(index="\u00b2")                  # SUPERSCRIPT TWO
    @example(index="9" * 5000)
    def run(index: str) -> None:
        _stat("examples")
        call = Call("PUT", f"/transfers/push/{fuzz.tx}/{q(index)}", b"\0" * 16,
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, fuzz.a, call, expect=(200, 400) if valid(index) else (400, 404))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("bucket indexes")


# == Property 3: chunks ===================================================================


def test_chunks_refuse_malformed_arguments(fuzz: Fuzz) -> None:
    """Property 3, first half: offsets, sizes and levels that are not plain integers in
    range, and unknown compressions, are a 400."""
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    levels_ok = {str(n) for n in range(0, 20)}
    bad_levels = st.one_of(bad_numbers(), st.sampled_from(["20", "100", "-3"])).filter(
        lambda v: v not in levels_ok)
    bad_compressions = st.one_of(TEXT, st.sampled_from(HOSTILE_SEGMENTS)).filter(
        lambda v: v not in OUR_ENCODINGS)

    @fuzz_settings(200)
    @given(name=st.sampled_from(["offset", "size", "level", "compression"]), data=st.data())
    def run(name: str, data: st.DataObject) -> None:
        _stat("examples")
        strategy = {"level": bad_levels, "compression": bad_compressions}.get(name,
                                                                             bad_numbers())
        value = data.draw(strategy, name)
        args = {"offset": "0", "size": "100", "compression": "none", name: value}
        call = Call("GET", f"/transfers/chunks/{fuzz.ids[0]}{encode_query(args)}",
                    route=f"/transfers/chunks/<id>?{name}=<bad>")
        check_call(findings, fuzz.a, call, binary_ok=True, expect=(400,))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("malformed chunk arguments")


def test_chunks_answer_exact_slices(fuzz: Fuzz) -> None:
    """Property 3, second half: any valid (offset, size) over any list of three real
    instances answers exactly that slice of their concatenated files."""
    findings = Findings()
    files = {i: fuzz.a.get(f"/instances/{i}/file").content for i in fuzz.ids}
    total = sum(len(f) for f in files.values())
    encodings = fuzz.a.post("/transfers/lookup", json=[
        {"Level": "Instance", "ID": fuzz.ids[0]}]).json().get("Encodings", ["gzip", "none"])
    numbers = st.one_of(st.integers(0, total + 100), st.integers(0, 3000),
                        st.sampled_from([0, 1, MAX_CHUNK_ARGUMENT, MAX_CHUNK_ARGUMENT - 1]))

    @fuzz_settings(120)
    @given(ids=st.lists(st.sampled_from(fuzz.ids), min_size=1, max_size=4),
           offset=numbers, size=numbers, encoding=st.sampled_from(encodings),
           level=st.one_of(st.none(), st.integers(1, 9)))
    def run(ids: list[str], offset: int, size: int, encoding: str, level: int | None) -> None:
        _stat("examples")
        concatenation = b"".join(files[i] for i in ids)
        expected = concatenation[offset:] if size == 0 else concatenation[offset:offset + size]
        args = {"offset": str(offset), "size": str(size), "compression": encoding}
        if level is not None:
            args["level"] = str(level)
        call = Call("GET", f"/transfers/chunks/{'.'.join(ids)}{encode_query(args)}",
                    route="/transfers/chunks/<ids>")
        response = check_call(findings, fuzz.a, call, binary_ok=True, expect=(200,))
        if response is None or response.status_code != 200:
            return
        used = response.headers.get(ENCODING_HEADER, encoding)
        try:
            data = _decode(response.content, used, len(expected))
        except (zlib.error, ValueError) as e:
            findings.add("chunk answer does not decode", f"{call.describe()} -> {e}")
            return
        if data != expected:
            findings.add("chunk answer is not the requested slice",
                         f"{call.describe()} -> {len(data)} bytes, expected {len(expected)}")

    run()
    findings.check("chunk slices")


# == Property 2: push transactions ========================================================


def _hex_id(n: int) -> str:
    return f"{n:08x}-fa22"


def _push_root(server: OrthancServer) -> Path:
    return server.storage / STAGING / "push"


def test_push_declared_sizes_sparse_and_cleaned(fuzz: Fuzz) -> None:
    """Property 2: declared sizes up to MaxInstanceSize open a transaction without using
    disk (sparse files), DELETE removes it; larger or ill-typed sizes are a 400; a short
    PUT into a huge bucket is a 400."""
    b = fuzz.b
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    root = _push_root(b)

    @fuzz_settings(40)
    @given(sizes=st.lists(declared_sizes, min_size=1, max_size=4),
           typed=st.integers(0, 9), compression=st.sampled_from(["gzip", "none"]))
    def run(sizes: list[int], typed: int, compression: str) -> None:
        _stat("examples")
        # One in ten examples sends a size as a JSON number: the wire wants strings.
        typed_wrong = typed == 0
        instances = [{"ID": _hex_id(n), "Size": size if typed_wrong and n == 0 else str(size),
                      "MD5": "0" * 32} for n, size in enumerate(sizes)]
        buckets = [[{"ID": _hex_id(n), "Offset": "0", "Size": str(size)}]
                   for n, size in enumerate(sizes)]
        body = dumps({"Instances": instances, "Buckets": buckets, "Compression": compression})
        total = sum(sizes)
        free = shutil.disk_usage(b.storage).free
        if typed_wrong or max(sizes) > MAX_INSTANCE_SIZE:
            expect: tuple[int, ...] = (400,)
        elif total > free + GiB:
            expect = (503,)
        elif total < free - GiB:
            expect = (200,)
        else:
            expect = (200, 503)
        usage_before = disk_usage(root)[1]
        dirs_before = set(os.listdir(root))
        call = Call("POST", "/transfers/push", body, route="/transfers/push")
        response = check_call(findings, b, call, expect=expect)
        if response is None or response.status_code != 200:
            if set(os.listdir(root)) != dirs_before:
                findings.add("a refused creation left a directory in staging", call.describe())
            return
        tx = response.json()["ID"]
        apparent = disk_usage(root / tx)[0]
        allocated = disk_usage(root)[1] - usage_before
        if apparent < total or allocated > 1 * MiB:
            findings.add("creation allocated disk (files not sparse)",
                         f"{call.describe()} -> {allocated} bytes allocated in staging for "
                         f"{apparent} declared")
        if sizes[0] != 100:
            put = Call("PUT", f"/transfers/push/{tx}/0", b"\0" * 100,
                       route="/transfers/push/<tx>/<n>")
            check_call(findings, b, put, expect=(400,))
        deleted = Call("DELETE", f"/transfers/push/{tx}", route="/transfers/push/<tx>")
        check_call(findings, b, deleted, expect=(200,))
        if (root / tx).exists():
            findings.add("DELETE left the transaction's staging directory", call.describe())
        check_call(findings, b, Call("GET", f"/transfers/push/{tx}",
                                     route="/transfers/push/<deleted tx>"), expect=(404,))

    run()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("declared push sizes")


def _push_plan(fuzz: Fuzz, compression: str) -> tuple[dict[str, Any], list[bytes]]:
    """A creation body over the three real files, and the payload of each bucket."""
    first, second, third = fuzz.ids
    half = len(fuzz.files[third]) // 2
    buckets = [[(first, 0, len(fuzz.files[first])), (second, 0, len(fuzz.files[second]))],
               [(third, 0, half)],
               [(third, half, len(fuzz.files[third]) - half)]]
    body = {"Instances": [{"ID": i, "Size": str(len(fuzz.files[i])), "MD5": md5_hex(fuzz.files[i])}
                          for i in fuzz.ids],
            "Buckets": [[{"ID": i, "Offset": str(o), "Size": str(s)} for i, o, s in bucket]
                        for bucket in buckets],
            "Compression": compression}
    payloads = [b"".join(fuzz.files[i][o:o + s] for i, o, s in bucket) for bucket in buckets]
    return body, payloads


def test_push_bucket_lengths_and_streams(fuzz: Fuzz) -> None:
    """Property 2: a PUT whose decoded length differs from the declared bucket, or whose
    stream is corrupted, is a 400 and changes nothing; the right bytes then commit."""
    b = fuzz.b
    b.wipe()
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {s.name: snapshot(s) for s in fuzz.servers}
    body, payloads = _push_plan(fuzz, "none")
    created = b.post("/transfers/push", json=body)
    assert created.status_code == 200, created.text
    tx = created.json()["ID"]
    encodings = created.json().get("Encodings", ["gzip", "none"])

    @fuzz_settings(80)
    @given(index=st.integers(0, 2), delta=st.integers(-100_000, 100_000).filter(bool),
           encoding=st.sampled_from([None, *encodings]), corrupt=st.integers(0, 4),
           seed=st.integers(0, 2**32))
    def run(index: int, delta: int, encoding: str | None, corrupt: int, seed: int) -> None:
        _stat("examples")
        size = len(payloads[index])
        length = max(0, size + delta)             # never the declared size: delta != 0
        data = random.Random(seed).randbytes(length)
        if corrupt == 0 and encoding in ("gzip", "zstd"):
            # The right bytes in a stream cut short (zstd frames carry no checksum by
            # default, so a flipped byte could decode to the right length).
            stream = _encode(payloads[index], encoding, "none")
            payload = stream[:len(stream) // 2]
        elif corrupt == 1 and encoding == "gzip":
            # The right bytes, then data after the gzip member.
            payload = _encode(payloads[index], encoding, "none") + b"\x1f\x8b\x08trailing"
        else:
            payload = _encode(data, encoding, "none")
        headers = {ENCODING_HEADER: encoding} if encoding is not None else {}
        call = Call("PUT", f"/transfers/push/{tx}/{index}", payload, headers,
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, b, call, expect=(400,))

    run()
    status = b.get_json(f"/transfers/push/{tx}")
    assert status["ReceivedBuckets"] == [], f"refused PUTs were kept: {status}"
    for index, payload in enumerate(payloads):
        put = b.request("PUT", f"/transfers/push/{tx}/{index}", data=payload)
        assert put.status_code == 200, put.text
    committed = b.post(f"/transfers/push/{tx}/commit")
    assert committed.status_code == 200, committed.text
    assert b.instance_md5s() == {i: md5_hex(f) for i, f in fuzz.files.items()}
    b.wipe()
    assert_servers_sound(fuzz.servers, logs, before, findings)
    findings.check("push bucket lengths")


def _open_bucket_of(server: OrthancServer, size: int, compression: str) -> tuple[str, list[str]]:
    """A transaction of one bucket of ``size`` bytes; its ID and the receiver's encodings."""
    response = server.post("/transfers/push", json={
        "Instances": [{"ID": "b0b0", "Size": str(size), "MD5": "0" * 32}],
        "Buckets": [[{"ID": "b0b0", "Offset": "0", "Size": str(size)}]],
        "Compression": compression})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer["ID"], list(answer.get("Encodings", ["gzip", "none"]))


BOMB = 200 * MiB
#: What a correct receiver may add to its resident memory while refusing a bomb.
BOMB_MEMORY_LIMIT = 64 * MiB


@pytest.mark.parametrize("kind", ["gzip", "zstd-streamed", "zstd-pledged-size",
                                  "zstd-forged-size"])
def test_push_decompression_bombs(fuzz: Fuzz, kind: str) -> None:
    """Property 2: 200 MB of zeros (or a header claiming 1 TiB) sent for a 1 KiB bucket:
    a quick 400, and the receiver's memory does not follow the bomb."""
    b = fuzz.b
    assert b.process is not None
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {b.name: snapshot(b)}
    headers: dict[str, str] = {}
    tx, encodings = _open_bucket_of(b, KiB, "gzip" if kind == "gzip" else "none")
    if kind == "gzip":
        payload = gzip_zeros(BOMB)
    else:
        if "zstd" not in encodings:
            perform(b, Call("DELETE", f"/transfers/push/{tx}"))
            pytest.skip("the receiver has no zstd (python3-zstandard)")
        payload = (zstd_forged_content_size(1 << 40) if kind == "zstd-forged-size"
                   else zstd_zeros(BOMB, pledge=kind == "zstd-pledged-size"))
        headers[ENCODING_HEADER] = "zstd"
    _stat("examples")
    call = Call("PUT", f"/transfers/push/{tx}/0", payload, headers,
                route="/transfers/push/<tx>/<n>")
    findings = Findings()
    started = time.monotonic()
    with PeakRss(b.process.pid) as rss:
        check_call(findings, b, call, expect=(400,))
    elapsed = time.monotonic() - started
    if elapsed > 5:
        findings.add("a bomb took long to refuse", f"{call.describe()} -> {elapsed:.1f} s")
    if rss.growth > BOMB_MEMORY_LIMIT:
        findings.add("the receiver's memory followed the bomb",
                     f"{call.describe()} -> resident memory +{rss.growth // MiB} MiB "
                     f"(peak {rss.peak // MiB} MiB, {rss.baseline // MiB} MiB before, "
                     f"{rss.after // MiB} MiB after)")
    perform(b, Call("DELETE", f"/transfers/push/{tx}"))
    assert_servers_sound((b,), logs, before, findings)
    findings.check(f"{kind} bomb")


def test_push_unknown_encodings_are_400(fuzz: Fuzz) -> None:
    """Property 2: an ``X-Transfers-Encoding`` that is not ours is a 400."""
    b = fuzz.b
    findings = Findings()
    logs = {s.name: LogWatch(s) for s in fuzz.servers}
    before = {b.name: snapshot(b)}
    tx, _ = _open_bucket_of(b, 16, "none")
    known = set(OUR_ENCODINGS)
    # Header values travel as text: no control characters, and HTTP trims the ends.
    header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Zl", "Zp")),
                          max_size=40)
    values = st.one_of(header_text, st.sampled_from(
        ["GZIP", "Zstd", "NONE", "br", "deflate", "identity", "gzip, zstd", "x-gzip", "",
         "gzip;q=1", "zstd\u200b", "\uff47\uff5a\uff49\uff50", "x" * 4000])).filter(
        lambda v: v.strip(" \t") not in known)

    @fuzz_settings(60)
    @given(value=values, data=st.binary(min_size=16, max_size=16))
    def run(value: str, data: bytes) -> None:
        _stat("examples")
        call = Call("PUT", f"/transfers/push/{tx}/0", data,
                    {ENCODING_HEADER: value.encode().decode("latin-1")},
                    route="/transfers/push/<tx>/<n>")
        check_call(findings, b, call, expect=(400,))

    run()
    perform(b, Call("DELETE", f"/transfers/push/{tx}"))
    assert_servers_sound((b,), logs, before, findings)
    findings.check("unknown bucket encodings")


# == Deep JSON: its own server, since a failure may take the server down =================


DEEP = 2000


@pytest.mark.parametrize("shape", ["arrays", "objects"])
def test_deeply_nested_json_is_400(make_cluster: Callable[..., list[OrthancServer]],
                                   shape: str) -> None:
    """Property 1: a few kilobytes of nested brackets on each JSON route are a 400, and
    Orthanc stays up."""
    (server,) = make_cluster(["deep"])
    findings = Findings()
    opening, closing = ("[", "]") if shape == "arrays" else ('{"a":', "}")
    body = (opening * DEEP + "1" + closing * DEEP).encode()
    for route in ["/transfers/send", "/transfers/pull", "/transfers/lookup", "/transfers/push"]:
        _stat("examples")
        check_call(findings, server, Call("POST", route, body, route=route), expect=(400,))
    if not alive(server):
        findings.add("Orthanc is not healthy after the run", "GET /system")
    findings.check(f"JSON nested {DEEP} deep ({shape})")


# == After everything: health, logs, files =================================================


def test_zz_servers_sound_after_the_fuzzing(fuzz: Fuzz) -> None:
    """Property 1 and 4 over the whole module: both servers answer, neither logged a
    Python traceback, nothing was written outside the staging directories."""
    findings = Findings()
    for server in fuzz.servers:
        status = server.get("/system")
        assert status.status_code == 200, status.text
    assert_servers_sound(fuzz.servers, fuzz.logs, fuzz.start, findings)
    # The transaction held open since the start is still there and whole.
    held = fuzz.a.get(f"/transfers/push/{fuzz.tx}")
    assert held.status_code == 200 and held.json()["CountBuckets"] == 2, held.text
    findings.check("after the whole fuzzing run")

