"""`make migration-check`: the previous release keeps working while the new migrations are
applied, and beside the new release on the same database (issue 17, docs/operations.md).

1. The previous release is the commit before the newest file in `migrations/` was added
   (HEAD when that file is not committed yet); it is checked out as a `git worktree` of
   this clone in a temporary folder, removed afterwards.
2. An embedded PostgreSQL (the wheel's) is migrated to that point by the old code's
   migrate, and the old code serves on it: `cd OLD && .venv/bin/python -m service serve`
   puts the old tree first on `sys.path` (checked before it starts: `service.__file__`
   must lie in the old tree).
3. A steady mixed load runs on it: reads, and every kind of write (create, patch with
   If-Match, delete of users and posts, creates with an Idempotency-Key, replayed).
4. The NEW code's migrate applies the new steps while the old release serves.
5. The new release starts beside it on the same database; both are loaded.
Any 5xx or any answer other than the one the contract promises fails the check.

Without a newer migration than the previous release (no parent commit to compare with)
it says so and passes: there is nothing to prove. `--folder DIR` migrates with another
folder than `migrations/` (a scratch step, as docs/operations.md shows), `--old REV`
names the previous release.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from service.database.embedded import EmbeddedPostgres
from tests.server import free_port

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def previous_release(folder: Path) -> str | None:
    """The commit before the newest migration in `folder` was added to `migrations/`."""
    newest = max(
        path.name for path in folder.glob("*.sql") if not path.name.endswith(".rollback.sql")
    )
    added = git("log", "--diff-filter=A", "--format=%H", "--", f"migrations/{newest}")
    if not added:  # not committed yet: the release before it is HEAD
        return git("rev-parse", "HEAD")
    first = added.splitlines()[-1]
    try:
        return git("rev-parse", "--verify", "--quiet", f"{first}^")
    except subprocess.CalledProcessError:
        return None


def migrate(tree: Path, url: str, *extra: str) -> None:
    result = subprocess.run(
        [PYTHON, "-m", "service", "migrate", *extra],
        cwd=tree,
        env=os.environ | {"DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"  migrate ({tree.name}): {result.stdout.strip()} {result.stderr.strip()}")
    if result.returncode != 0:
        raise SystemExit(f"migration check FAILED: migrate exited {result.returncode}")


class Service:
    def __init__(self, tree: Path, url: str, data_dir: Path, name: str) -> None:
        self.name = name
        check = subprocess.run(
            [PYTHON, "-c", "import service; print(service.__file__)"],
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not check.startswith(str(tree)):
            raise SystemExit(f"{name} would not run the code of {tree}: it imports {check}")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [PYTHON, "-m", "service", "serve"],
            cwd=tree,
            env=os.environ
            | {
                "DATABASE_URL": url,
                "PORT": str(port),
                "AUTH_DISABLED": "1",
                "DATA_DIR": str(data_dir),
                "CURSOR_SECRET": "migration-check-cursor-secret",
                "LOG_LEVEL": "WARNING",
            },
        )
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise SystemExit(f"{name} exited while starting")
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not become ready")
                time.sleep(0.2)
        print(f"  {name} serving on {self.base_url} from {tree} ({check})")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Load(threading.Thread):
    """One client's steady mix of every kind of request, each checked against the contract."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    def expect(self, what: str, response: httpx.Response, *statuses: int) -> httpx.Response:
        self.counts[what] += 1
        if response.status_code not in statuses:
            self.failures.append(
                f"{self.service.name} {what}: {response.status_code} {response.text[:300]}"
            )
        return response

    def round(self, client: httpx.Client) -> None:
        email = f"check-{uuid.uuid4().hex[:12]}@example.com"
        key = uuid.uuid4().hex
        body = {"email": email, "name": "Check"}
        user = self.expect(
            "POST /users", client.post("/users", json=body, headers={"Idempotency-Key": key}), 201
        )
        if user.status_code != 201:
            return
        replay = client.post("/users", json=body, headers={"Idempotency-Key": key})
        self.expect("POST /users (replayed key)", replay, 201)
        user_id = user.json()["id"]
        patched = client.patch(
            f"/users/{user_id}",
            json={"name": "Checked"},
            headers={"If-Match": user.headers["etag"]},
        )
        self.expect("PATCH /users", patched, 200)
        post = self.expect(
            "POST /posts",
            client.post(
                "/posts",
                json={"author_id": user_id, "title": "t", "body": "b"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ),
            201,
        )
        if post.status_code == 201:
            post_id = post.json()["id"]
            self.expect("GET /posts/{id}", client.get(f"/posts/{post_id}"), 200)
            changed = client.patch(
                f"/posts/{post_id}",
                json={"published": True},
                headers={"If-Match": post.headers["etag"]},
            )
            self.expect("PATCH /posts", changed, 200)
            stale = client.patch(
                f"/posts/{post_id}", json={"title": "x"}, headers={"If-Match": post.headers["etag"]}
            )
            self.expect("PATCH /posts (stale If-Match)", stale, 412)
            self.expect("GET /posts", client.get("/posts", params={"author_id": user_id}), 200)
            if random.random() < 0.5:
                self.expect("DELETE /posts", client.delete(f"/posts/{post_id}"), 204)
        self.expect("GET /users/{id}", client.get(f"/users/{user_id}"), 200)
        self.expect("GET /users", client.get("/users", params={"limit": 5}), 200)
        if random.random() < 0.5:
            self.expect("DELETE /users", client.delete(f"/users/{user_id}"), 204)

    def run(self) -> None:
        with httpx.Client(base_url=self.service.base_url, timeout=10) as client:
            while not self.stopping.is_set():
                try:
                    self.round(client)
                except httpx.HTTPError as error:
                    self.failures.append(f"{self.service.name}: {error!r}")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def check(old_rev: str, folder: Path | None, seconds: float) -> int:
    with tempfile.TemporaryDirectory(prefix="posts-migration-check-") as scratch:
        scratch_dir = Path(scratch)
        old_tree = scratch_dir / "old"
        git("worktree", "add", "--detach", str(old_tree), old_rev)
        embedded = EmbeddedPostgres(scratch_dir / "postgres")
        services: list[Service] = []
        loads: list[Load] = []
        try:
            url = embedded.start()
            migrate(old_tree, url)
            old = Service(old_tree, url, scratch_dir / "old-data", "previous release")
            services.append(old)
            loads.append(Load(old))
            loads[-1].start()
            time.sleep(seconds)
            print("  applying the new migrations while the previous release serves")
            migrate(ROOT, url, *(["--folder", str(folder)] if folder else []))
            time.sleep(seconds)
            new = Service(ROOT, url, scratch_dir / "new-data", "new release")
            services.append(new)
            loads.append(Load(new))
            loads[-1].start()
            time.sleep(seconds)
        finally:
            for load in loads:
                load.stop()
            for service in services:
                service.stop()
            embedded.stop()
            git("worktree", "remove", "--force", str(old_tree))
        failures = [failure for load in loads for failure in load.failures]
        for load in loads:
            total = sum(load.counts.values())
            print(f"  {load.service.name}: {total} requests, {len(load.failures)} failed")
        for failure in failures[:20]:
            print(f"    {failure}")
        if failures or len(loads) < 2 or not all(load.counts for load in loads):
            print("migration check FAILED")
            return 1
        print("migration check passed: no failed request from either release")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.previous_release")
    parser.add_argument("--folder", type=Path, help="the new migrations (default: migrations/)")
    parser.add_argument("--old", help="the previous release (default: found from git)")
    parser.add_argument("--seconds", type=float, default=5, help="load time of each phase")
    arguments = parser.parse_args()
    folder = arguments.folder.resolve() if arguments.folder else None
    old_rev = arguments.old or previous_release(folder or ROOT / "migrations")
    if old_rev is None:
        print("migration check: the newest migration has no release before it; nothing to check")
        return 0
    print(f"migration check: previous release {git('rev-parse', '--short', old_rev)}")
    return check(old_rev, folder, arguments.seconds)


if __name__ == "__main__":
    sys.exit(main())
