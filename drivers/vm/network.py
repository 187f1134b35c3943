"""A guest's network: QEMU user networking (slirp), so a guest can play a second lab host.

The guest gets a ``virtio-net-pci`` NIC on QEMU's user network: it is ``10.0.2.15``, it reaches
the host at :data:`HOST_ADDRESS` (``10.0.2.2``, which is the host's loopback), and nothing
reaches it except the TCP ports forwarded from the host's loopback (``hostfwd``), for example
the guest's sshd. No root, bridge or tap device is needed on the host, and nothing outside this
machine can connect to the guest.

:class:`Network` holds what one guest needs: the forwards, and the name the guest calls itself.
``boot_lines`` is the busybox shell ``boot.sh`` runs before the chroot to bring the NIC up
(the kernel names it ``eth0``: there is no udev renaming before the chroot).
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from rig.errors import ConfigError

#: The host as the guest sees it on QEMU's user network (the host's 127.0.0.1).
HOST_ADDRESS = "10.0.2.2"
GUEST_ADDRESS = "10.0.2.15"
#: The kernel module of the NIC (in the guest kernel cache: ``kernel.DEVICE_MODULES``).
NIC_MODULE = "virtio_net"
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


@dataclass(frozen=True)
class Forward:
    """Host ``127.0.0.1:host_port`` (TCP) reaches the guest's ``guest_port``."""

    host_port: int
    guest_port: int

    def __post_init__(self) -> None:
        for what, port in (("host", self.host_port), ("guest", self.guest_port)):
            if not 1 <= port <= 65535:
                raise ConfigError(f"forward: {what} port {port} is not in 1..65535")


@dataclass(frozen=True)
class Network:
    """User networking for one guest: ``forwards`` from the host, and its ``hostname``."""

    forwards: Sequence[Forward] = ()
    hostname: str = "rig-guest"

    def __post_init__(self) -> None:
        if not _HOSTNAME.fullmatch(self.hostname):
            raise ConfigError(f"hostname {self.hostname!r}: use letters, digits and '-' "
                              "(at most 63, not starting with '-')")

    def qemu_args(self) -> list[str]:
        fwd = "".join(f",hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}"
                      for f in self.forwards)
        return ["-netdev", f"user,id=net0{fwd}", "-device", "virtio-net-pci,netdev=net0"]

    def boot_lines(self) -> list[str]:
        """busybox sh for ``boot.sh`` (after the NIC's module is loaded)."""
        return [
            f"hostname {self.hostname}",
            "ip link set lo up || die 'cannot bring up lo'",
            "i=0; until [ -e /sys/class/net/eth0 ]; do i=$((i + 1));"
            " [ $i -gt 200 ] && die 'no eth0 (virtio_net)'; sleep 0.05; done",
            f"ip addr add {GUEST_ADDRESS}/24 dev eth0 && ip link set eth0 up"
            f" && ip route add default via {HOST_ADDRESS} || die 'cannot configure eth0'",
        ]


def free_port() -> int:
    """A TCP port on the host's loopback that nothing listens on now (the kernel's choice;
    another program may take it before QEMU does, which QEMU then reports)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
