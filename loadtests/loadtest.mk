# Seeding, load tests, benchmarks and profiles (issues 3 and 9): `make seed`, `make loadtest`,
# `make bench`, `make bench-pooler`, `make bench-replica`, `make bench-feed`, `make profile`,
# `make instructions`, `make instructions-layers`.
# Included from the top Makefile, which defines BIN, VENV and `install`. Knobs are
# environment variables, described in loadtests/README.md.

LOADTEST_STAMP := $(VENV)/.loadtest-stamp
# apt-get needs root; elsewhere sudo asks for it.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: seed loadtest bench bench-pooler bench-replica bench-feed profile instructions \
	instructions-layers instructions-features loadtest-check loadtest-install wrk-install pgbouncer-install

# Locust and its dependencies, pinned in loadtests/requirements.txt, on top of `install`.
$(LOADTEST_STAMP): loadtests/requirements.txt | install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r loadtests/requirements.txt
	touch $@

loadtest-install: install $(LOADTEST_STAMP)

wrk-install:
	@command -v wrk >/dev/null 2>&1 || { \
		echo "wrk not found: installing the Debian package"; \
		$(SUDO) apt-get install -y wrk || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }; \
	}

pgbouncer-install:
	@test -x /usr/sbin/pgbouncer || { \
		echo "PgBouncer not found: installing the Debian package"; \
		$(SUDO) apt-get install -y pgbouncer || { $(SUDO) apt-get update && $(SUDO) apt-get install -y pgbouncer; }; \
	}

## Empty and fill DATABASE_URL, or the embedded database in DATA_DIR (default .data), with
## 10,000 users and 200,000 posts times SEED_SCALE (default 1).
seed: install
	$(BIN)/python -m loadtests.seed

## Seed .data/loadtest, serve it on 127.0.0.1:8100, run Locust for LOADTEST_SECONDS (30)
## with LOADTEST_USERS (32); fails when a p95 exceeds LOADTEST_P95_MS (50) or a request fails.
loadtest: loadtest-install
	BIN=$(BIN) bash loadtests/run_loadtest.sh

## wrk against the service, the Litestar floor and the bare ASGI baseline, interleaved rounds,
## one table, the targets of issue 9 checked, then the mixed scenario at a fixed rate (open loop).
bench: loadtest-install wrk-install
	$(BIN)/python -m loadtests.bench

## The service through PgBouncer (transaction mode, a PgBouncer of the bench's own) beside the
## service direct, interleaved on the same data; checks issue 8's target (at least 0.8x).
bench-pooler: loadtest-install wrk-install pgbouncer-install
	BENCH_TARGETS="$${BENCH_TARGETS:-service,pooled}" BENCH_OPEN_RATE="$${BENCH_OPEN_RATE:-0}" \
		$(BIN)/python -m loadtests.bench

## GETs on one streaming replica beside the primary alone, and the cost of the read-your-writes
## token check: a primary and a standby of the bench's own (tests/clusters.py, removed after),
## the routing verified from the service's counters, interleaved wrk rounds, one table.
bench-replica: loadtest-install wrk-install
	$(BIN)/python -m loadtests.replica_bench

## The change feed (issue 18): what capture costs create_post and patch_post (triggers on and off,
## interleaved), one follower reading a backlog (limit=1000), and the commit-to-delivery delay
## of a long-polling follower at 500 writes/s, directly and through a PgBouncer of its own.
## One table, the targets checked; exit 1 when one is missed (BENCH_GATE=0: report only).
bench-feed: loadtest-install wrk-install pgbouncer-install
	$(BIN)/python -m loadtests.feed_bench

## The service's CPU per request, by layer: wrk at PROFILE_CONNECTIONS (8) for
## PROFILE_SECONDS (20) unobserved, then as long under py-spy (root or ptrace rights).
profile: loadtest-install wrk-install
	$(BIN)/python -m loadtests.profile

## The instruments' own tests: the bench's verdict, the open-loop generator, the profile's
## buckets, the baselines answering as the service does (real PostgreSQL, as `make test`).
loadtest-check: loadtest-install
	$(BIN)/pytest loadtests/tests

## Instructions per request by layer (valgrind's callgrind, in process over ASGI): the floor,
## the service, and the service with its ASGI layers taken off one by one.
instructions: loadtest-install
	@command -v valgrind >/dev/null 2>&1 || $(SUDO) apt-get install -y valgrind
	$(BIN)/python -m loadtests.instructions

## What each of the service's features costs, counted like `make instructions`: the service
## with one feature taken out at a time (loadtests/features.py), on the scenarios it serves.
## FEATURES=session,fair_gate narrows it.
instructions-features: loadtest-install
	@command -v valgrind >/dev/null 2>&1 || $(SUDO) apt-get install -y valgrind
	INSTRUCTIONS_LAYERS=0 INSTRUCTIONS_FEATURES=$(or $(FEATURES),all) \
		$(BIN)/python -m loadtests.instructions

## The service's own ASGI layers alone over a trivial app, no database (callgrind): a
## quick count while tuning one of them. LAYERS="edge edge_no_log-post" narrows it.
instructions-layers: loadtest-install
	@command -v valgrind >/dev/null 2>&1 || $(SUDO) apt-get install -y valgrind
	$(BIN)/python -m loadtests.layer_instructions $(LAYERS)
