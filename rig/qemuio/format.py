"""qemu-io's output formats, byte for byte (qemu-io-cmds.c: cvtstr, timestr, print_report,
dump_buffer). Only the timing numbers differ between runs; the shape never does.
"""

from __future__ import annotations

_UNITS = ((60, " EiB"), (50, " PiB"), (40, " TiB"), (30, " GiB"), (20, " MiB"), (10, " KiB"))


def cvtstr(value: float) -> str:
    """``65536`` -> ``'64 KiB'``, ``1536`` -> ``'1.500 KiB'``, ``200`` -> ``'200 bytes'``."""
    suffix, text = " bytes", f"{value:.6f}"
    for shift, unit in _UNITS:
        if value >= (1 << shift):
            suffix, text = unit, f"{value / (1 << shift):.3f}"
            break
    cut = text.find(".000")
    return text[:cut] + suffix if cut >= 0 else text + suffix


def timestr(seconds: float, verbose: bool = False) -> str:
    """QEMU 7.2: ``00.25 sec`` below a second, ``H:MM:SS.ss`` otherwise or when ``verbose``."""
    if verbose or seconds >= 1.0:
        whole = int(seconds)
        hours, rest = divmod(whole, 3600)
        minutes = rest // 60
        secs = seconds - hours * 3600 - minutes * 60
        return f"{hours}:{minutes:02d}:{secs:05.2f}"
    return f"{seconds:05.2f} sec"


def _rate(value: float, seconds: float) -> float:
    return value / seconds if seconds > 0 else float("inf")


def report(op: str, seconds: float, offset: int, count: int, total: int, cnt: int,
           csv: bool) -> str:
    """The two report lines (or the one ``-C`` line) after a successful request."""
    if csv:
        return (f"{total},{cnt},{timestr(seconds, True)},{_rate(total, seconds):.3f},"
                f"{_rate(cnt, seconds):.3f}\n")
    return (f"{op} {total}/{count} bytes at offset {offset}\n"
            f"{cvtstr(total)}, {cnt} ops; {timestr(seconds)} "
            f"({cvtstr(_rate(total, seconds))}/sec and {_rate(cnt, seconds):.4f} ops/sec)\n")


def dump_buffer(buf: bytes | memoryview, offset: int) -> str:
    """``-v``: 16 bytes a line, hex then the isalnum() characters."""
    data = bytes(buf)
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hexpart = "".join(f"{b:02x} " for b in chunk)
        text = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else "." for b in chunk)
        lines.append(f"{offset + i:08x}:  {hexpart} {text}\n")
    return "".join(lines)
