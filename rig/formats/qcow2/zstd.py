"""zstd-compressed clusters (``compression_type=zstd``; iotest 287), as QEMU 7.2's
qcow2_zstd_compress / qcow2_zstd_decompress, through the system's libzstd (``libzstd.so.1``,
loaded with ctypes when an image needs it).

Compression is one ``ZSTD_compressStream2(..., ZSTD_e_end)`` call on a fresh context (zstd's
default level) into at most a cluster less one byte; a cluster that does not fit is not
compressed. Decompression streams until the cluster is full (the stored size is rounded up to
sectors, so what follows the frame is ignored) and fails on a zstd error, on no progress, or
when the frame is not finished by then.
"""

from __future__ import annotations

import ctypes

_E_END = 2  # ZSTD_e_end


class _Buf(ctypes.Structure):
    """ZSTD_inBuffer / ZSTD_outBuffer."""

    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libzstd, loaded once (OSError when the system has none)."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libzstd.so.1")
        buf = ctypes.POINTER(_Buf)
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_createCCtx.argtypes = []
        lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_compressStream2.restype = ctypes.c_size_t
        lib.ZSTD_compressStream2.argtypes = [ctypes.c_void_p, buf, buf, ctypes.c_int]
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_createDCtx.argtypes = []
        lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_decompressStream.restype = ctypes.c_size_t
        lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, buf, buf]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        _lib = lib
    return _lib


def _streams(data: bytes, out_size: int) -> tuple[ctypes.Array[ctypes.c_char],
                                                  ctypes.Array[ctypes.c_char], _Buf, _Buf]:
    """A copy of ``data``, an output buffer of ``out_size`` bytes, and the zstd in/out buffer
    structures over them (the two arrays are returned so that they outlive the calls)."""
    src = ctypes.create_string_buffer(data, len(data))
    dst = ctypes.create_string_buffer(out_size)
    return (src, dst, _Buf(ctypes.cast(src, ctypes.c_void_p), len(data), 0),
            _Buf(ctypes.cast(dst, ctypes.c_void_p), out_size, 0))


def compress(data: bytes | bytearray | memoryview, limit: int) -> bytes | None:
    """QEMU's qcow2_zstd_compress; None when the result would be longer than ``limit``."""
    lib = library()
    _src, dst, inp, out = _streams(bytes(data), limit)  # _src: kept alive for the call
    cctx = lib.ZSTD_createCCtx()
    if not cctx:
        return None
    try:
        left = lib.ZSTD_compressStream2(cctx, ctypes.byref(out), ctypes.byref(inp), _E_END)
    finally:
        lib.ZSTD_freeCCtx(cctx)
    if left:  # not all flushed (no room) or an error: not stored compressed
        return None
    return dst.raw[:out.pos]


def decompress(data: bytes, cluster_size: int) -> bytes | None:
    """QEMU's qcow2_zstd_decompress of one cluster; None when the data is bad."""
    lib = library()
    _src, dst, inp, out = _streams(data, cluster_size)  # _src: kept alive for the calls
    dctx = lib.ZSTD_createDCtx()
    if not dctx:
        return None
    ret = 0
    try:
        while out.pos < out.size:
            last_in, last_out = inp.pos, out.pos
            ret = lib.ZSTD_decompressStream(dctx, ctypes.byref(out), ctypes.byref(inp))
            if lib.ZSTD_isError(ret):
                return None
            if last_in >= inp.pos and last_out >= out.pos:  # no progress
                return None
    finally:
        lib.ZSTD_freeDCtx(dctx)
    if ret:  # the frame goes on past the cluster
        return None
    return dst.raw
