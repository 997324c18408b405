# The Patroni cluster's parts and the failover tests under load (issue 20, tests/patroni.py,
# tests/test_chaos.py). Included by the Makefile.

PATRONI_VENV ?= /var/tmp/posts-service-patroni-venv
PATRONI_REQUIREMENTS := tests/patroni-requirements.txt
PATRONI_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: patroni-install chaos chaos-ci

## etcd and HAProxy from Debian, and Patroni (pinned in tests/patroni-requirements.txt) in a
## venv of Debian's /usr/bin/python3 in PATRONI_VENV, kept between runs: the user that runs
## Patroni must be able to execute its interpreter (FACTS.md, "Patroni").
patroni-install:
	@test -x /usr/bin/etcd -a -x /usr/sbin/haproxy && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || { \
		echo "etcd, HAProxy or python3-venv not found: installing the Debian packages"; \
		$(PATRONI_SUDO) apt-get install -y etcd-server haproxy python3-venv || { \
			$(PATRONI_SUDO) apt-get update && $(PATRONI_SUDO) apt-get install -y etcd-server haproxy python3-venv; }; \
	}
	@cmp -s $(PATRONI_REQUIREMENTS) $(PATRONI_VENV)/.installed-requirements.txt || { \
		echo "installing Patroni into $(PATRONI_VENV)"; \
		test -x $(PATRONI_VENV)/bin/python || /usr/bin/python3 -m venv $(PATRONI_VENV); \
		$(PATRONI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
			-r $(PATRONI_REQUIREMENTS) && \
		cp $(PATRONI_REQUIREMENTS) $(PATRONI_VENV)/.installed-requirements.txt; \
	}

## Every fault, in both topologies, several trials each, every history checked (minutes).
chaos: install patroni-install
	CHAOS=full REQUIRE_PATRONI=1 $(BIN)/pytest tests/test_chaos.py -p no:cacheprovider -s -ra

## The short subset CI runs: one kill of the leader's PostgreSQL and one switchover,
## through HAProxy, each history checked.
chaos-ci: install patroni-install
	CHAOS=ci REQUIRE_PATRONI=1 $(BIN)/pytest tests/test_chaos.py -p no:cacheprovider -s -ra
