"""Start the servers the tests need, run pytest, stop what was started.

PostgreSQL: DATABASE_URL when set, else the local server on 127.0.0.1:5432, started with
pg_ctlcluster if it is down. Kafka: KAFKA_BOOTSTRAP_SERVERS when set, else a Tansu broker
on a free loopback port for the whole run. Prometheus and promtool (tests/operations):
installed from Debian's `prometheus` package when missing and this runs as root.
Arguments are passed on to pytest.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOCAL_POSTGRES = ("127.0.0.1", 5432)


def _listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def ensure_local_postgres() -> None:
    """Start the machine's PostgreSQL cluster when nothing listens on 127.0.0.1:5432."""
    if _listening(LOCAL_POSTGRES):
        return
    versions = sorted(Path(path).name for path in glob.glob("/etc/postgresql/*"))
    if not versions:
        print("PostgreSQL is not listening on 127.0.0.1:5432 and no cluster is installed; "
              "set DATABASE_URL", file=sys.stderr)
        return
    print(f"starting PostgreSQL {versions[-1]} cluster 'main'", file=sys.stderr)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _listening(LOCAL_POSTGRES):
        time.sleep(0.5)


def ensure_prometheus() -> None:
    """Install Debian's prometheus package (prometheus and promtool) when they are missing and we are root."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("prometheus and promtool are not installed; the tests that need them skip, or fail under CI. "
              "Install them with: apt-get install prometheus", file=sys.stderr)
        return
    print("installing Debian's prometheus package for tests/operations", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(install, env=environment, check=False).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=environment, check=False)
        subprocess.run(install, env=environment, check=False)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from taskservice.embedded.services import EmbeddedBroker

    env = dict(os.environ)
    if not env.get("DATABASE_URL") and not env.get("TASKSERVICE_DATABASE_URL"):
        ensure_local_postgres()
    ensure_prometheus()
    broker = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="taskservice-broker-")))
        broker.start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        env["TASKSERVICE_TEST_BROKER"] = "tansu"
        print(f"Tansu broker on {broker.bootstrap_servers} (pid {broker.process.pid})", file=sys.stderr)
    try:
        return subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]], env=env)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
