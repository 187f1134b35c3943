"""The header codec: Hypothesis round trips, and arbitrary bytes never escape as anything but
HeaderError."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.formats.qcow2.header import (
    EXT_BACKING_FORMAT,
    EXT_FEATURE_TABLE,
    MAGIC,
    Extension,
    Header,
    HeaderError,
    decode,
    encode,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    version = draw(st.sampled_from([2, 3]))
    cluster_bits = draw(st.integers(9, 21))
    h = Header(
        version=version, cluster_bits=cluster_bits, size=draw(u64), l1_size=draw(u32),
        l1_table_offset=draw(u64), refcount_table_offset=draw(u64),
        refcount_table_clusters=draw(u32), crypt_method=draw(u32), nb_snapshots=draw(u32),
        snapshots_offset=draw(u64),
    )
    if version == 3:
        h.incompatible_features = draw(u64)
        h.compatible_features = draw(u64)
        h.autoclear_features = draw(u64)
        h.refcount_order = draw(st.integers(0, 6))
        h.header_length = draw(st.sampled_from([104, 112, 120]))
        if h.header_length > 104:
            h.compression_type = draw(st.integers(0, 255))
    exts = draw(st.lists(st.sampled_from([EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, 0x12345678])
                         .flatmap(lambda t: st.tuples(st.just(t), st.binary(
                             max_size=15 if t == EXT_BACKING_FORMAT else 40))), max_size=3))
    h.extensions = [Extension(t, d) for t, d in exts]
    h.backing_file = draw(st.none() | st.text(min_size=1, max_size=60))
    return h


@settings(max_examples=150)
@given(headers())
def test_round_trip(h: Header) -> None:
    data = encode(h)
    assert len(data) <= h.cluster_size
    # padding past the encoded header (the rest of the cluster) must not matter
    back = decode(data + bytes(64))
    assert back == h
    assert encode(back) == data


@settings(max_examples=150)
@given(headers(), st.data())
def test_mutated_bytes_decode_or_header_error(h: Header, data: st.DataObject) -> None:
    buf = bytearray(encode(h) + bytes(64))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(buf))
    except HeaderError as e:
        assert str(e)


@given(st.binary(max_size=200))
def test_garbage(buf: bytes) -> None:
    with contextlib.suppress(HeaderError):
        decode(MAGIC.to_bytes(4, "big") + buf)


def test_backing_format_accessors() -> None:
    h = Header(version=3, cluster_bits=16, size=1, l1_size=1, l1_table_offset=0,
               refcount_table_offset=0, refcount_table_clusters=1, header_length=112)
    assert h.extension(EXT_BACKING_FORMAT) is None
    h.set_backing_format("raw")
    h.set_backing_format("qcow2")
    assert h.backing_format == "qcow2"
    assert len(h.extensions) == 1
