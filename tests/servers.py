"""Real servers on 127.0.0.1 for the backend tests: a moto S3 server and a private Samba.

Started by session fixtures in conftest.py and stopped by their own pid (never pkill). Samba
needs root (useradd, smbpasswd) and the samba package: `.ci/run` installs it; without it the
SMB tests skip with the reason. Recipes and pitfalls: ../shared/RECIPES.md sections 1, 2 and 7.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SMB_USER, SMB_PASSWORD = "orbitsmb", "Orbit-Test-1"

SMB_CONF = """[global]
   server role = standalone server
   smb ports = {port}
   interfaces = 127.0.0.1
   bind interfaces only = yes
   disable netbios = yes
   server min protocol = SMB2_10
   private dir = {d}/private
   lock directory = {d}/lock
   state directory = {d}/state
   cache directory = {d}/cache
   pid directory = {d}/run
   ncalrpc dir = {d}/ncalrpc
   log file = {d}/log/log.%m
   passdb backend = tdbsam:{d}/private/passdb.tdb
   map to guest = never
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
[share]
   path = {d}/share
   read only = no
   valid users = {user}
   force user = root
[readonly]
   path = {d}/share
   read only = yes
   valid users = {user}
   force user = root
# NT security descriptors stored as they are set, in security.NTACL (--smb-security's tests)
[acl]
   path = {d}/acl
   read only = no
   valid users = {user}
   force user = root
   vfs objects = acl_xattr
# the same, with the account's own rights (no `force user`): it may not give files other owners
[acluser]
   path = {u}
   read only = no
   valid users = {user}
   vfs objects = acl_xattr
# a share that keeps no creation times or DOS attributes (tests/backends/test_smb_metadata.py)
[nodos]
   path = {d}/nodos
   read only = no
   valid users = {user}
   force user = root
   store dos attributes = no
   map archive = no
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with rc={proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening after {timeout}s")


def outage(job: subprocess.Popen, stop: Callable[[], None], start: Callable[[], None],
           down_s: float = 1.0) -> tuple[str, str]:
    """Take a server away under a running job for `down_s` and bring it back; the job's
    (stdout, stderr) once it ends. Fails if the job had already ended: nothing was tested."""
    stop()
    time.sleep(down_s)
    assert job.poll() is None, "the job ended before the outage: nothing was tested"
    start()
    return job.communicate(timeout=120)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class MotoServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(workdir / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port, self.proc)

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test",
                            config=Config(s3={"addressing_style": "path"}))  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"ORBIT_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip

    def stop(self) -> None:
        stop(self.proc)
        self._log.close()


def smb_available() -> str | None:
    """Why Samba tests cannot run here, or None."""
    if shutil.which("smbd") is None or shutil.which("smbpasswd") is None:
        return "needs the samba package (apt-get install samba; .ci/run does)"
    if os.geteuid() != 0:
        return "needs root (useradd and smbpasswd for a private Samba)"
    return None


class SambaServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = str(workdir)
        for sub in ("private", "lock", "state", "cache", "run", "ncalrpc", "log", "share",
                    "nodos", "acl"):  # fmt: skip
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        # [acluser]: the account writes there as itself, so its path is outside pytest's
        # temp root (mode 0700): a directory of its own in /tmp, removed at exit.
        self.user_dir = tempfile.mkdtemp(prefix="orbit-smb-user-")
        os.chmod(self.user_dir, 0o1777)
        atexit.register(shutil.rmtree, self.user_dir, True)
        self.conf = os.path.join(self.dir, "smb.conf")
        with open(self.conf, "w") as f:
            f.write(SMB_CONF.format(port=self.port, d=self.dir, u=self.user_dir, user=SMB_USER))
        if subprocess.run(["id", SMB_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", SMB_USER], check=True)
        subprocess.run(["smbpasswd", "-c", self.conf, "-s", "-a", SMB_USER],
                       input=f"{SMB_PASSWORD}\n{SMB_PASSWORD}\n", text=True, check=True,
                       capture_output=True)  # fmt: skip
        self.share_dir = Path(self.dir) / "share"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        # Plain --foreground calls setsid itself: stopping it cannot signal pytest's group.
        self.proc = subprocess.Popen(["smbd", "--foreground", f"--configfile={self.conf}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def url(self, path: str = "", share: str = "share") -> str:
        return f"smb://{SMB_USER}@127.0.0.1:{self.port}/{share}" + (f"/{path}" if path else "")

    def env(self) -> dict[str, str]:
        return {"ORBIT_SMB_PASSWORD": SMB_PASSWORD}


class TcpProxy:
    """A TCP relay on 127.0.0.1 in front of a server, which a test can cut and restore: the
    network blip of the deployment guide (moto keeps its state only while it runs, so the S3
    server itself cannot be restarted in the middle of a transfer)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.resume()

    def resume(self) -> None:
        import threading

        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def pause(self) -> None:
        """Refuse new connections and reset the open ones."""
        lst, self._listener = self._listener, None
        if lst is not None:
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, lst: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
