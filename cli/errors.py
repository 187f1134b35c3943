"""One-line CLI errors: argparse's usage dumps replaced by ``rig CMD: error: ...``."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from rig.cli.status import BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(BAD_INPUT)
