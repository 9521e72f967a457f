"""Assemble, start and stop a real single-node Apache Kafka (KRaft) broker on a loopback port.

Usage: local_kafka.py up|down|stop|status [--dir DIR] [--port N] [--env-file FILE] [--sasl]

`up` resolves Kafka's jars from Maven Central once (cached in ~/.cache/capi-stream), formats KRaft
storage, starts one combined broker+controller in the background, waits until it answers a metadata
request, and writes KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port> to the env file. It is idempotent: a
broker already running from DIR is reported, not started twice. `down` stops it, removes its data.
With `--sasl` the broker also listens for SASL_SSL (SCRAM-SHA-512) with a certificate from a CA
made on the spot; the env file then also names that listener, the user, a password file and the CA.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

KAFKA_VERSION = "4.1.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
LOG4J_CONFIG = REPO_ROOT / "scripts" / "kafka" / "log4j2.properties"
CACHE = Path(os.environ.get("CAPI_STREAM_CACHE", Path.home() / ".cache" / "capi-stream"))
LIBS = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
DEFAULT_DIR = REPO_ROOT / ".local" / "kafka"
DEFAULT_ENV_FILE = REPO_ROOT / ".local" / "kafka.env"
READY_TIMEOUT_S = 90.0
OFFSETS_PARTITIONS = 5
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_jars() -> None:
    if (LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return
    print(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central into {LIBS}", flush=True)
    tmp = LIBS.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
        check=True,
    )
    tmp.rename(LIBS)


SASL_USER = "capi-stream"


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)


def make_ca_and_certificate(directory: Path, name: str, *, days: int, ca_name: str) -> None:
    """A throwaway CA (`ca.crt`, `ca.key`) and `<name>.crt`/`<name>.key` it signed for 127.0.0.1."""
    openssl(
        directory,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        str(days),
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        f"/CN={ca_name}",
    )
    openssl(
        directory,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        directory,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        str(days),
        "-out",
        f"{name}.crt",
        "-extfile",
        "san.ext",
    )


def make_tls_material(data_dir: Path) -> None:
    """A throwaway CA and a broker certificate for 127.0.0.1, as a PKCS#12 keystore."""
    tls = data_dir / "tls"
    tls.mkdir(exist_ok=True)
    password = (tls / "store-password").read_text() if (tls / "store-password").exists() else ""
    if password and (tls / "broker.p12").exists():
        return
    password = secrets.token_hex(16)
    (tls / "store-password").write_text(password)
    make_ca_and_certificate(tls, "broker", days=30, ca_name="capi-stream test CA")
    openssl(
        tls,
        "pkcs12",
        "-export",
        "-in",
        "broker.crt",
        "-inkey",
        "broker.key",
        "-certfile",
        "ca.crt",
        "-out",
        "broker.p12",
        "-passout",
        f"pass:{password}",
    )


def sasl_properties(data_dir: Path, sasl_port: int) -> str:
    tls = data_dir / "tls"
    return f"""\
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\\
  org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location={tls / "broker.p12"}
ssl.keystore.password={(tls / "store-password").read_text()}
ssl.key.password={(tls / "store-password").read_text()}
ssl.endpoint.identification.algorithm=
"""


def server_properties(
    data_dir: Path, port: int, controller_port: int, sasl_port: int | None
) -> str:
    listeners = f"PLAINTEXT://127.0.0.1:{port}"
    if sasl_port is not None:
        listeners += f",SASL_SSL://127.0.0.1:{sasl_port}"
    # Sized for a 2-core test machine: one replica, few internal partitions, small segments,
    # and no initial rebalance delay so consumer groups form immediately in tests.
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners={listeners},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
log.dirs={data_dir / "data"}
num.partitions=1
num.network.threads=2
num.io.threads=4
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions={OFFSETS_PARTITIONS}
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=1000
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
auto.create.topics.enable=true
delete.topic.enable=true
""" + (sasl_properties(data_dir, sasl_port) if sasl_port is not None else "")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.split(") ", 1)[1][0] != "Z"


def running_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "broker.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    return pid if pid_alive(pid) else None


def answers_metadata(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient  # imported late: `down` must work without it

    host, port = bootstrap.rsplit(":", 1)
    try:
        # A plain connect first keeps librdkafka from logging refused connections while Java starts.
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    try:
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
    except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
        return False
    return bool(metadata.brokers) and coordinates_groups(bootstrap)


def coordinates_groups(bootstrap: str) -> bool:
    """True once offset fetches succeed: a fresh broker first answers NOT_COORDINATOR while it
    creates and loads __consumer_offsets, which would fail the first commit of any client."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    # Groups spread over the offsets topic's partitions, so every coordinator shard is loaded.
    for shard in range(OFFSETS_PARTITIONS * 3):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"readiness-{shard}"})
        try:
            consumer.committed([TopicPartition("__readiness", 0)], timeout=5)
        except KafkaException:
            return False
        finally:
            consumer.close()
    return True


def up(data_dir: Path, port: int | None, env_file: Path, sasl: bool) -> None:
    pid = running_pid(data_dir)
    if pid is not None:
        bootstrap = (data_dir / "bootstrap").read_text().strip()
        print(f"Kafka {KAFKA_VERSION} already running (pid {pid}) at {bootstrap}")
        write_env(env_file, bootstrap, data_dir)
        return
    ensure_jars()
    started = time.monotonic()
    data_dir.mkdir(parents=True, exist_ok=True)
    port_file = data_dir / "port"
    if port is None:
        # A restart reuses the broker's previous port so clients and stored data stay valid.
        port = int(port_file.read_text()) if port_file.exists() else free_port()
    controller_port = free_port()
    sasl_port_file = data_dir / "sasl-port"
    sasl_port = None
    if sasl or sasl_port_file.exists():
        sasl_port = int(sasl_port_file.read_text()) if sasl_port_file.exists() else free_port()
        sasl_port_file.write_text(str(sasl_port))
        make_tls_material(data_dir)
        if not (data_dir / "sasl-password").exists():
            (data_dir / "sasl-password").write_text(secrets.token_hex(12))
    properties = data_dir / "server.properties"
    properties.write_text(server_properties(data_dir, port, controller_port, sasl_port))
    java = [
        shutil.which("java") or "java",
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        f"{LIBS}/*",
    ]
    if not (data_dir / "data" / "meta.properties").exists():
        scram = []
        if sasl_port is not None:
            password = (data_dir / "sasl-password").read_text()
            scram = ["--add-scram", f"SCRAM-SHA-512=[name={SASL_USER},password={password}]"]
        subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                str(uuid.uuid4().hex[:22]),
                "-c",
                str(properties),
                *scram,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    log = (data_dir / "broker.out").open("ab")
    proc = subprocess.Popen(
        [*java, "kafka.Kafka", str(properties)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (data_dir / "broker.pid").write_text(str(proc.pid))
    port_file.write_text(str(port))
    bootstrap = f"127.0.0.1:{port}"
    (data_dir / "bootstrap").write_text(bootstrap)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not answers_metadata(bootstrap):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(data_dir)
            sys.exit(f"Kafka failed to start; see {data_dir / 'broker.out'}")
        time.sleep(0.2)
    write_env(env_file, bootstrap, data_dir)
    print(
        f"Kafka {KAFKA_VERSION} ready at {bootstrap} (pid {proc.pid}) "
        f"in {time.monotonic() - started:.1f}s; log {data_dir / 'broker.out'}"
    )


def write_env(env_file: Path, bootstrap: str, data_dir: Path) -> None:
    lines = [f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}"]
    sasl_port_file = data_dir / "sasl-port"
    if sasl_port_file.exists():
        lines += [
            f"KAFKA_SASL_BOOTSTRAP_SERVERS=127.0.0.1:{sasl_port_file.read_text()}",
            f"KAFKA_SASL_USERNAME={SASL_USER}",
            f"KAFKA_SASL_PASSWORD_FILE={data_dir / 'sasl-password'}",
            f"KAFKA_SSL_CA_LOCATION={data_dir / 'tls' / 'ca.crt'}",
        ]
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("\n".join(lines) + "\n")


def stop(data_dir: Path) -> bool:
    pid = running_pid(data_dir)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.1)
    return True


def down(data_dir: Path, env_file: Path, keep_data: bool) -> None:
    stopped = stop(data_dir)
    if not keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
        env_file.unlink(missing_ok=True)
    print("Kafka stopped" if stopped else "Kafka was not running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--port", type=int)
    parser.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    parser.add_argument("--sasl", action="store_true", help="also listen for SASL_SSL (SCRAM)")
    args = parser.parse_args()
    data_dir = args.dir.resolve()
    if args.command == "up":
        up(data_dir, args.port, args.env_file, args.sasl)
    elif args.command == "down":
        down(data_dir, args.env_file, keep_data=False)
    elif args.command == "stop":
        # Stop the process but keep its data and port, to simulate a broker restart.
        down(data_dir, args.env_file, keep_data=True)
    else:
        pid = running_pid(data_dir)
        print(f"running (pid {pid})" if pid else "not running")
        sys.exit(0 if pid else 1)


if __name__ == "__main__":
    main()
