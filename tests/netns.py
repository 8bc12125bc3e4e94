"""A network namespace joined to the host by a veth pair: one "machine" for the partition test.

:class:`Link` creates namespace ``<name>`` and a veth pair, the host end ``<name>h``
(``10.213.<n>.1/30``) and the namespace end ``<name>n`` (``10.213.<n>.2/30``); a command
runs inside with :attr:`Link.prefix` (``ip netns exec <name>``). :meth:`Link.cut` makes
both ends drop every packet they send (a ``blackhole`` qdisc), so TCP on both sides sees
silence, as behind a failed switch, and no error tells either side; :meth:`Link.restore`
undoes it. :meth:`Link.remove` deletes both (the namespace end goes with the namespace);
it also runs before the setup, for a link a killed run left behind, and
:func:`remove_stale` removes the links of processes that have exited.

:func:`unavailable_reason` says why no link can be made here (not root, no ``ip`` or
``tc``, the kernel refuses), or ``None``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

PREFIX = "tep"  # namespace names: tep<pid>x<k>; interface names add one letter (<= 15)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30, check=True)


class Link:
    """A namespace and the veth pair joining it to the host (see the module docstring)."""

    def __init__(self, k: int) -> None:
        self.name = f"{PREFIX}{os.getpid()}x{k}"
        octet = (os.getpid() * 8 + k) % 250 + 1
        self.host_if = f"{self.name}h"
        self.ns_if = f"{self.name}n"
        self.host_ip = f"10.213.{octet}.1"
        self.ns_ip = f"10.213.{octet}.2"

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        """Create the namespace and the link, both ends up.

        Raises:
            subprocess.CalledProcessError: ``ip`` refused (its stderr says why).
        """
        self.remove()
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        inside = ["-n", self.name]
        _ip(*inside, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        _ip(*inside, "link", "set", self.ns_if, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def cut(self) -> None:
        """Nothing passes the link any more, either way, silently: both ends' queues drop
        every packet (a ``blackhole`` qdisc), the link stays up, so the routes stay and no
        sender gets an error, as behind a failed switch."""
        _tc("qdisc", "add", "dev", self.host_if, "root", "blackhole")
        _tc("-n", self.name, "qdisc", "add", "dev", self.ns_if, "root", "blackhole")

    def restore(self) -> None:
        """The link passes packets again."""
        _tc("qdisc", "del", "dev", self.host_if, "root")
        _tc("-n", self.name, "qdisc", "del", "dev", self.ns_if, "root")

    def remove(self) -> None:
        """Delete the namespace and the host end of the link, if they exist. Idempotent."""
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)


def remove_stale() -> None:
    """Remove the namespaces (and links) of earlier runs whose process has exited."""
    listed = _ip("netns", "list", check=False).stdout.split()
    for name in listed:
        if not name.startswith(PREFIX) or "x" not in name:
            continue
        pid = name[len(PREFIX) :].split("x", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("link", "del", f"{name}h", check=False)
            _ip("netns", "del", name, check=False)


def unavailable_reason() -> str | None:
    """Why a namespace and a veth pair cannot be made here, or ``None`` if they can."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "the ip and tc commands (iproute2) are not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = Link(9)
    try:
        probe.create()
        probe.cut()
        probe.restore()
    except subprocess.CalledProcessError as exc:
        return (
            f"{' '.join(exc.cmd[:4])} failed (a namespace, a veth pair and a blackhole qdisc "
            f"are needed): {exc.stderr.strip()}"
        )
    finally:
        probe.remove()
    return None


@contextlib.contextmanager
def link(k: int = 0) -> Iterator[Link]:
    """A created :class:`Link`, removed afterwards whatever happens."""
    remove_stale()
    made = Link(k)
    try:
        made.create()
        yield made
    finally:
        made.remove()
