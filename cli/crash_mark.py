"""``rig crash mark TEXT``: put a user mark into the log of the ``rig crash record`` that runs
this command (through ``$RIG_MARK_SOCKET``), once the mark is in the log.

0 once the mark is logged (``--print-seq`` prints its sequence number); 2 for bad input (no
recorder to talk to, a text that is not one line of UTF-8); 1 when the recorder could not be
reached or refused the mark. Errors are one line, mapped in ``cli/status.py``.
"""

from __future__ import annotations

import argparse

from rig.crash.marks import ENV, send_mark


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", metavar="TEXT",
                        help="the mark's text (several words are joined by spaces)")
    parser.add_argument("--print-seq", action="store_true",
                        help="print the mark's sequence number in the log")
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help=f"the recorder's mark socket (default: ${ENV})")
    parser.set_defaults(rig_prog="rig crash mark")


def run(args: argparse.Namespace) -> int:
    seq = send_mark(" ".join(args.text), args.socket)
    if args.print_seq:
        print(seq)
    return 0
