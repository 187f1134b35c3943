"""Disks on many hosts, reserved through a labgrid coordinator (the client side).

A lab host runs a ``labgrid-exporter`` whose groups each hold a ``NetworkService`` (how to ssh
to that host); a disk is a labgrid *place* that matches its host's group, with the disk's
identity in the place's tags (``wwn=...``, ``serial=...``, ``by_path=...``)::

    labgrid-client -p rack1-sdb create
    labgrid-client -p rack1-sdb add-match 'rack1/sdb/*'
    labgrid-client -p rack1-sdb set-tags wwn=0x5000c500a1b2c3d4 destructive=true

:class:`Coordinator` finds places (by name, or by tags: ``wwn=0x5000c5...``), acquires and
releases them. Reads go through ``python -m rig.drivers.lab.lgquery`` and changes through
``labgrid-client``, each in a process of its own: no gRPC in the test process. Each run is its
own labgrid client (``LG_HOSTNAME``/``LG_USERNAME``: the host, the user and the pid), so two
runs on one machine refuse each other's places just as two machines do.

:class:`Hold` keeps places acquired for a run and gives them back at the end; if the run dies
first (SIGKILL included), a :class:`~rig.drivers.procs.DeathWatch` releases them with
``labgrid-client release-from``, which releases a place only while the dead run still holds it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from rig.drivers.procs import DeathWatch
from rig.errors import ConfigError, RigError

#: The tags that name a disk (the inventory's identity keys, plus ``by_id``).
IDENTITY_TAGS = ("wwn", "serial", "by_id", "by_path", "model")
_QUERY_TIMEOUT_S = 60.0
_POLL_S = 2.0
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
_TAG = re.compile(r"[A-Za-z0-9_-]+")
_HOLDER = re.compile(r"already acquired by (\S+?)\.?(?:\s|$)")
_ERROR_LINE = re.compile(r"^(?:labgrid-client: )?(?:Error|Server error): (.*)$", re.MULTILINE)


class PlaceError(RigError):
    """A place could not be found, acquired or released (the message says which and why)."""


class PlaceBusyError(PlaceError):
    """Another client holds the place."""


class CoordinatorError(RigError):
    """The coordinator cannot be reached, or labgrid is missing."""


@dataclass(frozen=True)
class Resource:
    path: str  # exporter/group/cls/name
    cls: str
    avail: bool
    acquired: str
    params: Mapping[str, Any]

    @property
    def exporter(self) -> str:
        return self.path.split("/", 1)[0]


@dataclass(frozen=True)
class SshTarget:
    """Where a place's host takes ssh (from its ``NetworkService``)."""

    host: str  # the exporter's name
    address: str
    port: int
    username: str


@dataclass(frozen=True)
class Place:
    name: str
    tags: Mapping[str, str]
    acquired: str  # "host/user", or "" when free
    resources: tuple[Resource, ...] = field(default=())

    def identity(self) -> dict[str, str]:
        """The disk's identity tags (wwn, serial, by_id, by_path, model); a PlaceError if it
        has none (its host could not tell its disk from another)."""
        found = {k: self.tags[k] for k in IDENTITY_TAGS if self.tags.get(k)}
        if not found:
            raise PlaceError(f"place {self.name}: no identity tag ({', '.join(IDENTITY_TAGS)}):"
                             f" labgrid-client -p {self.name} set-tags wwn=0x...")
        return found

    def ssh(self) -> SshTarget:
        """The host's ssh access, from the place's ``NetworkService``."""
        for r in self.resources:
            if r.cls == "NetworkService":
                try:
                    return SshTarget(r.exporter, str(r.params["address"]),
                                     int(r.params.get("port", 22)), str(r.params["username"]))
                except (KeyError, TypeError, ValueError):
                    break
        raise PlaceError(f"place {self.name}: no NetworkService (address, username) among its "
                         "resources: add one to the exporter's group and match it "
                         f"(labgrid-client -p {self.name} add-match 'HOST/GROUP/*')")

    def matches(self, selector: Mapping[str, str]) -> bool:
        return all(self.tags.get(k) == v or (k in ("wwn", "serial")
                                             and _same(k, self.tags.get(k), v))
                   for k, v in selector.items())


def _same(kind: str, ours: str | None, theirs: str) -> bool:
    if ours is None:
        return False
    from rig.drivers.safety import norm_serial, norm_wwn

    norm = norm_wwn if kind == "wwn" else norm_serial
    return norm(ours) == norm(theirs)


def parse_address(text: str) -> str:
    """``HOST:PORT`` (the coordinator's address), checked."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None or not 0 < int(m.group("port")) < 65536:
        raise ConfigError(f"coordinator address {text!r}: give HOST:PORT, e.g. "
                          "labhost.example:20408")
    return text.strip()


def parse_selector(text: str) -> str | dict[str, str]:
    """A place name, or ``key=value[,key=value...]`` matched against place tags."""
    text = text.strip()
    if "=" not in text:
        if not text or not _TAG.fullmatch(text):
            raise ConfigError(f"place {text!r}: give a place name (letters, digits, '-', '_') "
                              "or tags, e.g. wwn=0x5000c500a1b2c3d4")
        return text
    tags: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not _TAG.fullmatch(key) or not value or any(c.isspace() for c in value):
            raise ConfigError(f"place selector {text!r}: each part is key=value "
                              "(e.g. wwn=0x5000c500a1b2c3d4,destructive=true)")
        tags[key] = value
    return tags


def error_line(stderr: str) -> str:
    """The one line that says why ``labgrid-client`` failed (its last error line, else its
    last line)."""
    found = _ERROR_LINE.findall(stderr)
    if found:
        return " ".join(str(found[-1]).split())
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def client_identity() -> tuple[str, str]:
    """(LG_HOSTNAME, LG_USERNAME) of this run: the host, and the user with this pid."""
    return socket.gethostname(), f"{getpass.getuser()}.rig{os.getpid()}"


def _labgrid_client() -> str:
    beside = Path(sys.executable).parent / "labgrid-client"
    found = str(beside) if beside.exists() else shutil.which("labgrid-client")
    if found is None:
        raise CoordinatorError("labgrid-client not found: pip install 'blockrig[lab]' (labgrid)")
    return found


class Coordinator:
    """A labgrid coordinator at ``address`` (``HOST:PORT``), as this run's client."""

    def __init__(self, address: str) -> None:
        self.address = parse_address(address)
        self.hostname, self.username = client_identity()

    @property
    def who(self) -> str:
        """How the coordinator names this client: ``host/user``."""
        return f"{self.hostname}/{self.username}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "LG_COORDINATOR": self.address, "LG_HOSTNAME": self.hostname,
                "LG_USERNAME": self.username}

    def places(self) -> list[Place]:
        proc = self._run([sys.executable, "-m", "rig.drivers.lab.lgquery", self.address])
        if proc.returncode != 0:
            raise CoordinatorError(error_line(proc.stderr))
        try:
            data = json.loads(proc.stdout)
            resources = [Resource(r["path"], r["cls"], bool(r["avail"]), r["acquired"],
                                  r["params"]) for r in data["resources"]]
            return [Place(p["name"], dict(p["tags"]), p["acquired"],
                          tuple(r for r, raw in zip(resources, data["resources"], strict=True)
                                if p["name"] in raw["places"]))
                    for p in data["places"]]
        except (ValueError, KeyError, TypeError) as e:
            raise CoordinatorError(f"coordinator {self.address}: unreadable answer ({e})") from None

    def find(self, selector: str | Mapping[str, str],
             places: Sequence[Place] | None = None) -> Place:
        """The one place named ``selector``, or whose tags match it."""
        places = self.places() if places is None else places
        if isinstance(selector, str):
            for p in places:
                if p.name == selector:
                    return p
            known = ", ".join(sorted(p.name for p in places)) or "none"
            raise PlaceError(f"no place {selector!r} at coordinator {self.address} "
                             f"(places: {known})")
        found = [p for p in places if p.matches(selector)]
        text = ",".join(f"{k}={v}" for k, v in selector.items())
        if not found:
            raise PlaceError(f"no place at coordinator {self.address} has tags {text}: tag the "
                             "disk's place (labgrid-client -p PLACE set-tags ...)")
        if len(found) > 1:
            raise PlaceError(f"tags {text} match {len(found)} places "
                             f"({', '.join(p.name for p in found)}): give more tags or a name")
        return found[0]

    def acquire(self, name: str) -> None:
        proc = self._client("-p", name, "acquire")
        if proc.returncode != 0:
            why = error_line(proc.stderr)
            holder = _HOLDER.search(why)
            if holder:
                raise PlaceBusyError(f"place {name} is held by {holder.group(1)}")
            raise PlaceError(f"place {name}: {why}")

    def release(self, name: str) -> None:
        proc = self._client("-p", name, "release-from", self.who)
        if proc.returncode != 0:
            raise PlaceError(f"place {name}: cannot release: {error_line(proc.stderr)}")

    def create(self, name: str, match: str, tags: Mapping[str, str]) -> None:
        """Create a place matching ``match`` (``exporter/group/*``) with ``tags`` (lab setup)."""
        for args in (("create",), ("add-match", match),
                     ("set-tags", *(f"{k}={v}" for k, v in tags.items()))):
            proc = self._client("-p", name, *args)
            if proc.returncode != 0:
                raise PlaceError(f"place {name}: {args[0]} failed: {error_line(proc.stderr)}")

    def _client(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([_labgrid_client(), "-x", self.address, *args])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, env=self._env(),
                                  stdin=subprocess.DEVNULL, timeout=_QUERY_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise CoordinatorError(f"coordinator {self.address}: no answer within "
                                   f"{_QUERY_TIMEOUT_S:g} s") from None


#: The watcher's script: ``$1`` labgrid-client, ``$2`` the address, ``$3`` who held them,
#: then the places.
_RELEASE_ALL = ('c=$1; a=$2; w=$3; shift 3; for p in "$@"; do '
                '"$c" -x "$a" -p "$p" release-from "$w"; done')


class Hold:
    """Places acquired for as long as the ``with`` block (or until :meth:`close`); released by
    a watcher if this process dies first. Waits up to ``timeout`` s for places others hold."""

    def __init__(self, coordinator: Coordinator, names: Sequence[str],
                 timeout: float = 0.0) -> None:
        self.coordinator = coordinator
        self.names = list(names)
        self.timeout = timeout
        self._held: list[str] = []
        self._watch: DeathWatch | None = None

    def __enter__(self) -> Hold:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        c = self.coordinator
        # The watcher starts first: a SIGKILL between an acquire and its record loses nothing.
        self._watch = DeathWatch("rig-lab-release", _RELEASE_ALL, _labgrid_client(), c.address,
                                 c.who, *self.names)
        deadline = time.monotonic() + self.timeout
        try:
            for name in self.names:
                while True:
                    try:
                        c.acquire(name)
                        break
                    except PlaceBusyError as e:
                        if time.monotonic() >= deadline:
                            raise PlaceBusyError(f"{e} (waited {self.timeout:g} s)") from None
                        time.sleep(_POLL_S)
                self._held.append(name)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        errors = []
        for name in reversed(self._held):
            try:
                self.coordinator.release(name)
            except RigError as e:
                errors.append(str(e))
        self._held = []
        if self._watch is not None and not errors:
            self._watch.release()
            self._watch = None
        if errors:
            raise PlaceError("; ".join(errors))
