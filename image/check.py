"""`make image-check`: build the Dockerfile as it is with podman, run the image as a real
container, and check what a deployment relies on. Prints what it did and how long it took.

1. Tools: podman, buildah, runc and debootstrap, from Debian's packages when missing.
2. The base: no image registry is reachable here, so `python:3.11-slim` cannot be pulled.
   Unless a `python:3.11-slim` is already in podman's storage, a STAND-IN is made once per
   machine and kept there: a Debian 12 root made by debootstrap with Debian's python3
   (3.11.2), imported under that name and labelled `posts-service.stand-in`. The check
   therefore proves the Dockerfile's steps and the image's behaviour, not the contents of
   the official base image.
3. The build: `podman build --format docker` (the OCI format drops HEALTHCHECK).
4. The image, run with its own USER, Env, WorkingDir, Cmd and nothing overridden: serves
   /health/ready on its embedded PostgreSQL with the data in its /data volume; every
   process runs as the image's user, none as root; the HEALTHCHECK command exits 0; a
   user written before a restart (a new container on the same volume) is read after it;
   the documented migrate command, run from the image, migrates a database of its own on
   the machine's PostgreSQL (127.0.0.1:5432), which the check makes and drops.

How the containers start on this machine kind (see docs/operations.md, The container):
crun refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported"), so runc
runs them; podman asks for limits (nofile 1048576) above the machine's hard limits, so
they are given explicitly, within those limits (`--ulimit nofile=N:N --ulimit nproc=...`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BASE = "docker.io/library/python:3.11-slim"
STAND_IN_LABEL = "posts-service.stand-in"
IMAGE = os.environ.get("IMAGE_CHECK_TAG", "localhost/posts-service:check")
SERVER = os.environ.get("IMAGE_CHECK_SERVER", "postgresql://postgres@127.0.0.1:5432/test")
PACKAGES = ["podman", "buildah", "runc", "debootstrap"]

_hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
_nofile = 65536 if _hard_nofile == resource.RLIM_INFINITY else min(_hard_nofile, 65536)
RUNTIME = ["--runtime", "runc"]
LIMITS = ["--ulimit", f"nofile={_nofile}:{_nofile}", "--ulimit", "nproc=4096:4096"]
TIMINGS: dict[str, float] = {}


def say(message: str) -> None:
    print(f"== image-check: {message}", flush=True)


def run(*command: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        sys.exit(
            f"image-check: `{' '.join(command)}` exited {done.returncode}\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    if not quiet and done.stdout.strip() and len(done.stdout) < 400:
        print(done.stdout.rstrip())
    return done


def podman(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("podman", *arguments, check=check, quiet=True)


@contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    TIMINGS[name] = time.monotonic() - start
    say(f"{name}: {TIMINGS[name]:.1f} s")


def ensure_tools() -> None:
    missing = [name for name in ("podman", "buildah", "runc", "debootstrap") if not _found(name)]
    if not missing:
        return
    say(f"installing {', '.join(missing)} from Debian's packages")
    if run("apt-get", "install", "-y", *PACKAGES, check=False, quiet=True).returncode != 0:
        run("apt-get", "update", quiet=True)
        run("apt-get", "install", "-y", *PACKAGES, quiet=True)


def _found(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


def ensure_base() -> str:
    """The image the Dockerfile's FROM names: the one in podman's storage, or a stand-in
    made now (about 2 minutes, once per machine)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", BASE).stdout)
        if STAND_IN_LABEL in (labels or {}):
            kind = f"the STAND-IN for {BASE} ({labels[STAND_IN_LABEL]}), kept from an earlier run"
        else:
            kind = f"{BASE} as found in podman's storage (not this check's stand-in)"
        say(f"base image: {kind}")
        return kind
    say(f"base image: {BASE} is not here and no registry is reachable; making a STAND-IN")
    with (
        timed("stand-in base made (debootstrap, import)"),
        tempfile.TemporaryDirectory(prefix="posts-service-base-", dir="/var/tmp") as folder,
    ):
        tree = Path(folder) / "root"
        run(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates",
            "bookworm",
            str(tree),
            "http://deb.debian.org/debian",
            quiet=True,
        )
        # The official image has `python`; pip in the build trusts what pip here trusts.
        (tree / "usr/local/bin/python").symlink_to("/usr/bin/python3")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", tree / "etc/ssl/certs/")
        version = run("chroot", str(tree), "python", "--version", quiet=True).stdout.split()[-1]
        description = f"Debian 12 by debootstrap with Debian's python3 {version}"
        tar = subprocess.Popen(["tar", "-C", str(tree), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                "podman", "import",
                "--change", f'LABEL {STAND_IN_LABEL}="{description}"',
                "--change", 'CMD ["python3"]',
                "-", BASE,
            ],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
        )  # fmt: skip
        assert tar.wait() == 0
    kind = f"the STAND-IN for {BASE} ({description}), made now"
    say(f"base image: {kind}")
    return kind


def build() -> dict[str, object]:
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).stdout.strip()
    with timed("build"):
        run(
            "podman", "build", *RUNTIME, *LIMITS,
            # --layers=false: no intermediate images left behind (the build stage's is
            # 469 MB); a cache would rarely help, as CI builds changed code.
            "--network", "host", "--pull=never", "--format", "docker", "--layers=false",
            "-t", IMAGE, str(ROOT),
            quiet=True,
        )  # fmt: skip
    current = podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    if previous and previous != current:
        podman("rmi", previous, check=False)  # the last run's image, now untagged
    inspected: dict[str, object] = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    return inspected


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http(method: str, url: str, body: object = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_ready(container: str, base_url: str, seconds: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, body = http("GET", f"{base_url}/health/ready")
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            logs = podman("logs", container, check=False)
            sys.exit(f"image-check: {container} is {state}, not ready\n{logs.stdout}{logs.stderr}")
        time.sleep(0.3)


def start(name: str, volume: str, port: int) -> None:
    """The image as a deployment runs it: its own user, env, working dir and command; only
    the port published and the volume named."""
    podman(
        "run", *RUNTIME, *LIMITS, "--detach", "--name", name,
        "--publish", f"127.0.0.1:{port}:8000", "--volume", f"{volume}:/data", IMAGE,
    )  # fmt: skip


def processes(container: str) -> list[tuple[str, str]]:
    rows = podman("top", container, "huser", "args").stdout.splitlines()[1:]
    return [(row.split(None, 1)[0], row.split(None, 1)[1].strip()) for row in rows if row.strip()]


def check_serving(config: dict[str, object]) -> None:
    tag = f"posts-image-check-{os.getpid()}"
    volume, port = tag, free_port()
    base_url = f"http://127.0.0.1:{port}"
    podman("volume", "create", volume)
    try:
        with timed("first start to ready (initdb, migrations)"):
            start(tag, volume, port)
            ready = wait_ready(tag, base_url)
        assert ready["status"] == "ready", ready
        say(f"serves /health/ready: {json.dumps(ready)}")

        inspected = podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume)
        mountpoint = Path(inspected.stdout.strip())
        assert (mountpoint / "postgres" / "PG_VERSION").is_file(), "no PostgreSQL data in /data"
        say(f"the embedded PostgreSQL keeps its data in the /data volume ({mountpoint})")

        new_user = {"email": "image@example.com", "name": "Image"}
        status, user = http("POST", f"{base_url}/users", new_user)
        assert status == 201, (status, user)

        uid = podman("exec", tag, "id", "-u").stdout.strip()
        running = processes(tag)
        assert len(running) > 2, running  # the service and its PostgreSQL
        assert {who for who, _ in running} == {uid}, running
        assert uid != "0"
        assert config["User"] == "service"
        say(f"{len(running)} processes, every one as uid {uid} ({config['User']}), none as root")

        health = podman("healthcheck", "run", tag, check=False)
        assert health.returncode == 0, health.stderr
        say("the image's HEALTHCHECK command exits 0")

        with timed("stop (SIGTERM)"):
            podman("stop", "--time", "30", tag)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", tag).stdout.strip()
        assert code == "0", f"the service exited {code} on SIGTERM"
        podman("rm", tag)
        with timed("a new container on the same volume to ready"):
            start(tag, volume, port)
            wait_ready(tag, base_url)
        status, again = http("GET", f"{base_url}/users/{user['id']}")
        assert status == 200, (status, again)
        assert again["email"] == "image@example.com", again
        say(f"user {user['id']}, written before the restart, is read after it")
        podman("stop", "--time", "30", tag)
    finally:
        podman("rm", "--force", tag, check=False)
        podman("volume", "rm", "--force", volume, check=False)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(SERVER)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _applied(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT migration_id FROM _yoyo_migration ORDER BY 1")
        return [row["migration_id"] for row in rows]
    finally:
        await connection.close()


def check_migrate() -> None:
    """The documented command: `docker run --rm -e DATABASE_URL=... posts-service python
    -m service migrate` (host networking, to reach 127.0.0.1:5432)."""
    name = f"posts_image_check_{os.getpid()}"
    url = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", SERVER.split("://", 1)[1], count=1)
    url = f"{SERVER.split('://', 1)[0]}://{url}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        sys.exit(f"image-check: the migrate check needs a PostgreSQL at {SERVER}: {error}")
    try:
        with timed("migrate an external database from the image"):
            podman(
                "run", *RUNTIME, *LIMITS, "--rm", "--network", "host",
                "--env", f"DATABASE_URL={url}", IMAGE, "python", "-m", "service", "migrate",
            )  # fmt: skip
        expected = sorted(
            path.stem
            for path in (ROOT / "migrations").glob("*.sql")
            if not path.name.endswith(".rollback.sql")
        )
        applied = asyncio.run(_applied(url))
        assert applied == expected, (applied, expected)
        say(f"`python -m service migrate` from the image applied {len(applied)} migrations, {name}")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    started = time.monotonic()
    ensure_tools()
    base = ensure_base()
    inspected = build()
    config = inspected["Config"]
    assert isinstance(config, dict)
    healthcheck = inspected.get("Healthcheck") or {}
    assert isinstance(healthcheck, dict)
    assert healthcheck.get("Test"), "the image has no HEALTHCHECK (built in OCI format?)"
    assert "/data" in (config.get("Volumes") or {}), config.get("Volumes")
    size = int(str(inspected["Size"]))
    base_size = int(podman("image", "inspect", "--format", "{{.Size}}", BASE).stdout.strip())
    say(
        f"image {IMAGE}: user {config['User']}, workdir {config['WorkingDir']}, "
        f"cmd {' '.join(config['Cmd'])}, volumes {', '.join(config['Volumes'])}, "
        f"HEALTHCHECK {' '.join(healthcheck['Test'][:3])} …"
    )
    check_serving(config)
    check_migrate()
    say(f"image size: {size / 1e6:.0f} MB (its base {base_size / 1e6:.0f} MB)")
    say(f"built FROM {base}: this proves the Dockerfile's steps and the image's behaviour,")
    say("not the contents of the official python:3.11-slim")
    say(f"PASS in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
