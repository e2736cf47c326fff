"""Emulated nodes on one machine, in two modes.

**Hydra host list** (:func:`run_nodes`, any user): MPICH hydra's host list with the fork
launcher; the ranks are grouped into nodes, but all share one network stack.

**Network namespaces** (:class:`NetnsCluster`, root only): each node is a network
namespace of its own with one interface and address, joined by a bridge, optionally
with its link capped in bandwidth; MPI's inter-node messages cross that link. See the
class for what it builds and how it always cleans up.

Hydra host-list mode in detail:

``mpiexec -launcher fork -hosts node0:2,node1:2 -n 4 ...`` starts every rank on this
machine (fork, no ssh), but hydra groups the ranks by the host name it was given: the
ranks listed under one name form one "node".

What the emulation reproduces (checked in tests/test_cluster.py):

* ``Split_type(COMM_TYPE_SHARED)`` returns one group per host name, so ``local_rank`` /
  ``local_size`` (and everything computed from them: threads per rank, the GPU a rank
  binds to) are those of a multi-node job, also for uneven layouts (``node0:3,node1:1``).
* MPICH's own shared-memory module is per node: the ranks of one name map one
  ``/dev/shm/mpich_shm_*`` segment and ranks of different names share none, so messages
  between "nodes" go through the network module (UCX) instead.
* MPI collectives see a multi-node communicator (MPICH may pick node-aware algorithms).

What it does not reproduce:

* No real network. UCX sees that both ends are on one host and carries the "inter-node"
  messages over its own shared-memory transports (sysv / cma, as ``UCX_PROTO_INFO=y``
  shows); forcing ``UCX_TLS=self,tcp`` fails in MPI_Init here ("Destination is
  unreachable"). Latency, bandwidth, network failures and partitions are not emulated.
* One machine's cores, memory and GPUs are shared by all "nodes": the host names share
  ``os.cpu_count()``; per-node thread counts and GPU counts are pretended in the tests.
* ``MPI.Get_processor_name()`` / ``socket.gethostname()`` still return the real host name
  on every rank; only hydra's grouping changes. The names need not resolve (fork never
  contacts them), and all traffic, including hydra's control connections, stays on
  loopback (``HYDRA_IFACE=lo``, ``UCX_NET_DEVICES=lo`` from :func:`mpirun.mpi_env`).
* Files, the file system and environment variables are shared (no per-node disks).

Every launch runs in a process group of its own (:func:`mpirun.run_group`): a timeout
kills mpiexec, the proxies and every rank, and removes the MPICH segments they leaked.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from mpirun import PRELUDE, mpi_env, mpiexec, remove_stale_mpich_shm, run_group


def hosts(layout) -> str:
    """``(3, 1)`` -> ``"node0:3,node1:1"``: ranks per emulated node, in rank order."""
    layout = tuple(int(r) for r in layout)
    if not 1 <= len(layout) <= 8 or min(layout) < 1:
        raise ValueError(f"layout {layout}: 1 to 8 nodes of at least one rank each")
    return ",".join(f"node{i}:{r}" for i, r in enumerate(layout))


def command(layout, argv) -> list:
    """The mpiexec command line that runs ``argv`` on ``layout`` emulated nodes."""
    return [mpiexec(), "-launcher", "fork", "-hosts", hosts(layout), "-n", str(sum(layout)),
            *map(str, argv)]


def run_nodes(layout, argv, *, timeout: float = 120, check: bool = True, env: dict | None = None,
              cwd=None) -> subprocess.CompletedProcess:
    """Run ``argv`` (a program and its arguments) on every rank of ``layout``."""
    cmd = command(layout, argv)
    proc = run_group(cmd, timeout=timeout, env=mpi_env(env), cwd=cwd)
    if proc.returncode != 0:
        remove_stale_mpich_shm(min_age=0)  # an aborted world leaks its segments
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def run_cli_nodes(layout, *args, **kw) -> subprocess.CompletedProcess:
    """``python -m shardlearn ARGS`` on ``layout`` emulated nodes."""
    return run_nodes(layout, [sys.executable, "-m", "shardlearn", *args], **kw)


def run_script_nodes(layout, code: str, tmp_path, **kw) -> subprocess.CompletedProcess:
    """A Python snippet on ``layout`` emulated nodes; ``emit(obj)`` reports a ``RESULT``
    line (parse with :func:`mpirun.json_lines`), as in :func:`mpirun.run_script`."""
    script = Path(tmp_path) / f"cluster_{hosts(layout).replace(':', '-').replace(',', '_')}_{abs(hash(code)) % 10**8}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    return run_nodes(layout, [sys.executable, str(script)], **kw)


# ======================================================================= network namespaces
#: every name this module creates starts with this (namespaces, their temporary directory)
PREFIX = "shlc"
#: the interface every node has (the same name on each, so one UCX_NET_DEVICES serves all)
IFACE = "cl0"
#: node i has SUBNET.(i+1)/24; the addresses exist only inside the cluster's namespaces
SUBNET = "10.213.0"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-(?:n\d+|sw)$")
_SEQ = itertools.count()
_LIVE: set = set()
_UNAVAILABLE: dict = {}


def _ip(*args, check=True, timeout=20) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _tc(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=20)
    if check and proc.returncode:
        raise RuntimeError(f"tc {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _our_namespaces() -> list:
    """Names of the namespaces this module's naming scheme covers (any creator)."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    return sorted(n for n in names if _NAME.match(n))


def _remove_namespace(name: str) -> None:
    """SIGKILL every process inside namespace ``name``, then delete it (its veth ends and
    bridge go with it). Missing namespaces are fine."""
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list:
    """Remove the namespaces (and temporary directories) left by a creator process that
    no longer runs (a test run killed before its cleanup). Returns the names removed."""
    gone = []
    for name in _our_namespaces():
        if not _alive(int(_NAME.match(name).group(1))):
            _remove_namespace(name)
            gone.append(name)
    tmp = Path(tempfile.gettempdir())
    for d in tmp.glob(f"{PREFIX}-*"):
        m = re.match(rf"^{PREFIX}-(\d+)-", d.name)
        if m and d.is_dir() and not _alive(int(m.group(1))):
            _kill_users_of(d)
            shutil.rmtree(d, ignore_errors=True)
    return gone


def _kill_users_of(directory: Path) -> None:
    """SIGTERM the processes outside the namespaces that a dead creator started with files
    in ``directory`` (the multi-node Slurm's munged): found by the path on their command line."""
    marker = str(directory).encode() + b"/"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def netns_unavailable() -> str | None:
    """None when this machine lets the tests build network namespaces joined by veth
    pairs, else the reason (for ``pytest.skip``). Checked once per process by building
    and removing a throwaway pair."""
    if "netns" in _UNAVAILABLE:
        return _UNAVAILABLE["netns"]
    why = None
    if sys.platform != "linux":
        why = "network namespaces are Linux only"
    elif os.geteuid() != 0:
        why = "network namespaces need root (CI runs as root)"
    elif not shutil.which("ip"):
        why = "no 'ip' command (iproute2)"
    else:
        tag = f"{PREFIX}-{os.getpid()}-{next(_SEQ)}"
        a, b = f"{tag}-n0", f"{tag}-sw"
        try:
            _ip("netns", "add", a)
            _ip("netns", "add", b)
            _ip("link", "add", IFACE, "netns", a, "type", "veth", "peer", "name", "p0", "netns", b)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            why = f"cannot create network namespaces and veth pairs here: {e}"
        finally:
            _remove_namespace(a)
            _remove_namespace(b)
    _UNAVAILABLE["netns"] = why
    return why


def rate_unavailable() -> str | None:
    """None when a link can be capped with the ``tbf`` queueing discipline, else why not."""
    if "tbf" in _UNAVAILABLE:
        return _UNAVAILABLE["tbf"]
    why = netns_unavailable()
    if why is None and not shutil.which("tc"):
        why = "no 'tc' command (iproute2) to cap the link"
    if why is None:
        try:
            with NetnsCluster((1, 1), rate_gbit=1.0):
                pass
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            why = f"cannot cap a link with tbf here: {e}"
    _UNAVAILABLE["tbf"] = why
    return why


@atexit.register
def _down_all() -> None:
    for cluster in list(_LIVE):
        cluster.down()


class NetnsCluster:
    """K emulated nodes, each its own network namespace, joined by a bridge.

    What :meth:`up` builds (all names start with ``shlc-<this pid>-<n>``; nothing is
    created, changed or addressed in the machine's own network namespace)::

        namespace ...-n0: lo, cl0 = 10.213.0.1/24 ---veth--- p0 \
        namespace ...-n1: lo, cl0 = 10.213.0.2/24 ---veth--- p1  }-- bridge br0 in ...-sw
        ...                                                      /

    Each veth pair is created with its two ends directly inside the two namespaces. The
    node namespaces have no route but their /24, so no packet can leave the cluster.
    ``rate_gbit`` caps every node's link with ``tbf`` in both directions (cl0's egress
    and its bridge port's egress): a full-duplex link of that rate.

    Launching (:meth:`command`): ``mpiexec`` runs inside node 0's namespace with
    ``-launcher ssh -launcher-exec SHIM -hosts 10.213.0.1:R0,10.213.0.2:R1,...``; SHIM is a
    small script that hydra calls as it would call ssh (``SHIM -x HOST "proxy command"``)
    and that runs the proxy command under ``ip netns exec <HOST's namespace>``. Hydra and
    UCX are told the interface (``HYDRA_IFACE=cl0``, ``UCX_NET_DEVICES=cl0``), and UCX's
    transports are limited to ``self,tcp``: otherwise UCX notices that the "nodes" share a
    kernel and moves their messages through shared memory, bypassing the link (measured:
    13 KB on the veth for an 8 MB allreduce). Within a node MPICH's own shared memory
    carries the messages, as on a real cluster.

    Cleanup, always: :meth:`down` SIGKILLs every process inside the namespaces, deletes
    the namespaces (their veth ends and the bridge go with them) and the temporary
    directory; it runs on leaving the ``with`` block (also after an exception or a
    timeout), at interpreter exit (atexit) for clusters still up, and :func:`sweep_stale`
    (called by every :meth:`up`) removes whatever a killed process left behind. A
    launch that times out is killed whole (:func:`mpirun.run_group`).
    """

    def __init__(self, layout, *, rate_gbit: float | None = None):
        layout = tuple(int(r) for r in layout)
        if not 1 <= len(layout) <= 8 or min(layout) < 1:
            raise ValueError(f"layout {layout}: 1 to 8 nodes of at least one rank each")
        if rate_gbit is not None and not rate_gbit > 0:
            raise ValueError(f"rate_gbit {rate_gbit}: a positive number of Gb/s, or None")
        self.layout, self.rate_gbit = layout, rate_gbit
        self.tag = f"{PREFIX}-{os.getpid()}-{next(_SEQ)}"
        self.nodes = [f"{self.tag}-n{i}" for i in range(len(layout))]
        self.switch = f"{self.tag}-sw"
        self.addrs = [f"{SUBNET}.{i + 1}" for i in range(len(layout))]
        self.dir: Path | None = None
        self.is_up = False

    def __repr__(self) -> str:
        cap = f", {self.rate_gbit:g} Gb/s" if self.rate_gbit else ""
        return f"NetnsCluster({self.hosts()}{cap}, {self.tag})"

    # ------------------------------------------------------------- lifetime
    def __enter__(self) -> "NetnsCluster":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def namespaces(self) -> list:
        return [*self.nodes, self.switch]

    def up(self) -> "NetnsCluster":
        if self.is_up:
            return self
        why = netns_unavailable()
        if why:
            raise RuntimeError(why)
        sweep_stale()
        _LIVE.add(self)
        self.is_up = True
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=self.tag + "-"))
            sw = self.switch
            _ip("netns", "add", sw)
            _ip("-n", sw, "link", "set", "lo", "up")
            _ip("-n", sw, "link", "add", "br0", "type", "bridge")
            _ip("-n", sw, "link", "set", "br0", "up")
            for i, (ns, addr) in enumerate(zip(self.nodes, self.addrs)):
                _ip("netns", "add", ns)
                _ip("link", "add", IFACE, "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", sw)
                _ip("-n", sw, "link", "set", f"p{i}", "master", "br0")
                _ip("-n", sw, "link", "set", f"p{i}", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", IFACE)
                _ip("-n", ns, "link", "set", IFACE, "up")
                if self.rate_gbit:
                    self._cap(ns, IFACE)
                    self._cap(sw, f"p{i}")
            self._write_shim()
        except BaseException:
            self.down()
            raise
        return self

    def _cap(self, ns: str, dev: str) -> None:
        """tbf at ``rate_gbit`` on ``dev``'s egress: a bucket of 1 ms at that rate (at
        least 64 KiB, so one GSO packet fits) and up to 100 ms of queue."""
        rate = self.rate_gbit * 1e9
        burst = max(int(rate / 8 / 1000), 64 * 1024)
        _tc("-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{int(rate)}bit",
            "burst", str(burst), "latency", "100ms")

    def _write_shim(self) -> None:
        cases = "\n".join(f"    {a}) ns={n} ;;" for a, n in zip(self.addrs, self.nodes))
        self.shim = self.dir / "launch-in-netns"
        self.shim.write_text(f"""#!/bin/sh
# hydra calls this instead of ssh: launch-in-netns [ssh options] HOST "proxy command"
# (written by tests/cluster.py for {self.tag}: runs the command in HOST's namespace)
while [ $# -gt 0 ]; do
  case $1 in -x|-q|-T|-n) shift ;; -o|-p|-l) shift 2 ;; *) break ;; esac
done
host=$1; shift
case $host in
{cases}
    *) echo "launch-in-netns: no emulated node has address $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" /bin/sh -c "$*"
""")
        self.shim.chmod(0o755)

    def down(self) -> None:
        """Kill everything inside the namespaces, delete them and the temporary directory.
        Idempotent; never raises."""
        for name in self.namespaces():
            try:
                _remove_namespace(name)
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.is_up = False
        _LIVE.discard(self)

    def __del__(self):
        if getattr(self, "is_up", False):
            self.down()

    # ------------------------------------------------------------- launching
    def hosts(self) -> str:
        return ",".join(f"{a}:{r}" for a, r in zip(self.addrs, self.layout))

    def env(self, extra: dict | None = None) -> dict:
        env = mpi_env()
        env.update({"UCX_NET_DEVICES": IFACE, "HYDRA_IFACE": IFACE, "UCX_TLS": "self,tcp"})
        if extra:
            env.update(extra)
        return env

    def command(self, argv) -> list:
        """The command line (run from the machine's namespace) that starts ``argv`` on
        every rank: mpiexec in node 0's namespace, proxies through the shim."""
        if not self.is_up:
            raise RuntimeError(f"{self!r} is not up")
        return ["ip", "netns", "exec", self.nodes[0], mpiexec(), "-launcher", "ssh",
                "-launcher-exec", str(self.shim), "-hosts", self.hosts(), "-n", str(sum(self.layout)),
                *map(str, argv)]

    def run(self, argv, *, timeout: float = 120, check: bool = True, env: dict | None = None,
            cwd=None) -> subprocess.CompletedProcess:
        cmd = self.command(argv)
        try:
            proc = run_group(cmd, timeout=timeout, env=self.env(env), cwd=cwd)
        except subprocess.TimeoutExpired:
            self._kill_inside()
            raise
        if proc.returncode != 0:
            self._kill_inside()
            remove_stale_mpich_shm(min_age=0)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                 f"stderr:\n{proc.stderr}")
        return proc

    def _kill_inside(self) -> None:
        for name in self.nodes:
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass

    def run_cli(self, *args, **kw) -> subprocess.CompletedProcess:
        """``python -m shardlearn ARGS`` on every rank."""
        return self.run([sys.executable, "-m", "shardlearn", *args], **kw)

    def run_script(self, code: str, tmp_path, **kw) -> subprocess.CompletedProcess:
        """A Python snippet on every rank (``emit(obj)`` as in :func:`mpirun.run_script`)."""
        script = Path(tmp_path) / f"netns_{'_'.join(map(str, self.layout))}_{abs(hash(code)) % 10**8}.py"
        script.write_text(PRELUDE + textwrap.dedent(code))
        return self.run([sys.executable, str(script)], **kw)

    # ------------------------------------------------------------- counters
    def link_bytes(self) -> list:
        """``[(tx_bytes, rx_bytes)]`` of each node's cl0 so far."""
        out = []
        for ns in self.nodes:
            st = json.loads(_ip("-j", "-n", ns, "-s", "link", "show", IFACE).stdout)[0]["stats64"]
            out.append((st["tx"]["bytes"], st["rx"]["bytes"]))
        return out

    def qdiscs(self) -> list:
        """The root qdisc of each node's cl0 as ``tc -j -s`` reports it (kind, options, bytes)."""
        return [json.loads(_tc("-j", "-n", ns, "-s", "qdisc", "show", "dev", IFACE).stdout)[0]
                for ns in self.nodes]
