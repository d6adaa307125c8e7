# Sylk Pushserver: everything a developer needs, from a fresh machine.
#   make run    create .venv and start the daemon (with the demo fakes) on ./config
#               (make run PORT=8400 HOST=127.0.0.1 APNS_PORT=18443 FCM_PORT=18444 ARGS=--debug)
#   make test   create .venv and run the trial suite
#   make test-debian   run the suite on Debian 12's packaged libraries (/usr/bin/python3)
#   make check  type-check sylkpush with mypy (settings in mypy.ini; installs mypy into .venv)
#   make test-cassandra   start a one-node Apache Cassandra (Java, Maven) and run the Cassandra tests on both
#   make bench  throughput, added latency and memory against the fakes, and v2 registrations and
#               account pushes per second (installs wrk; PROFILE=1: py-spy; FAKE=python|node)
#   make bench-v2-cassandra   the v2 figures with SQLite, then with a one-node Cassandra
#   make soak   faults injected repeatedly under load; lost / duplicated / peak RSS
#   make sip-deps   Kamailio and SIPp, for the test that drives config/kamailio.cfg
#   make deb    build the Debian package (source and binary) into build/deb, then lintian

# .venv's interpreter: the system's /usr/bin/python3 when it is 3.11 or newer and can make a
# venv, else python3 from PATH; PYTHON=... chooses another.  Debian builds its interpreter with
# profile-guided and link-time optimisation and links libpython into it: on the same libraries
# the daemon spent 15-21 % less CPU per push on it than on pyenv's default build.
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV := .venv
VPY := $(VENV)/bin/python
# named after the interpreter: another one makes .venv again
STAMP := $(VENV)/.installed-$(subst /,_,$(PYTHON))
DEBIAN_PACKAGES := python3-twisted python3-treq python3-h2 python3-jwt python3-google-auth \
	python3-openssl python3-service-identity python3-systemd python3-prometheus-client \
	python3-hypothesis python3-cassandra
# what tests/test_kamailio.py needs (it is skipped without them)
SIP_PACKAGES := kamailio kamailio-utils-modules kamailio-extra-modules sip-tester
TESTS ?= tests

.PHONY: run test check test-debian debian-deps sip-deps cassandra-deps test-cassandra deb bench bench-v2-cassandra soak clean

$(STAMP): requirements.txt setup.py
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# make run: the daemon's address, the fakes' ports, more sylk-pushserver options
PORT ?= 8400
HOST ?= 127.0.0.1
APNS_PORT ?= 18443
FCM_PORT ?= 18444
ARGS ?=

run: $(STAMP)
	PYTHONPATH=. $(VPY) scripts/demo-run --apns-port $(APNS_PORT) --fcm-port $(FCM_PORT) \
	  --ip $(HOST) --port $(PORT) $(ARGS)

test: $(STAMP)
	PYTHONPATH=. $(VPY) -m twisted.trial $(TESTS)

# mypy with the zope.interface plugin (Twisted's interfaces), pinned: a new
# release may find new errors; it checks against the PyPI floor in .venv
MYPY_PACKAGES := mypy==2.4.1 mypy-zope==1.0.17
CHECK_STAMP := $(VENV)/.check-installed

$(CHECK_STAMP): $(STAMP)
	$(VPY) -m pip install --quiet $(MYPY_PACKAGES)
	touch $@

check: $(CHECK_STAMP)
	@if $(VPY) -m mypy; then echo "ok - mypy sylkpush"; else echo "not ok - mypy sylkpush"; exit 1; fi

debian-deps:
	@dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); }

# the tests run their own Kamailio on loopback: the packaged service, which
# the installation starts where systemd runs, would listen on every interface
sip-deps:
	@dpkg -s $(SIP_PACKAGES) >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SIP_PACKAGES) && \
	  if [ -d /run/systemd/system ]; then systemctl disable --now kamailio.service; fi; }

test-debian: debian-deps
	PYTHONPATH=. /usr/bin/python3 -m twisted.trial $(TESTS)

# make test-cassandra CASSANDRA_NODE="--heap 768M --auth none"
# The node (tests/cassandra/node) runs with PasswordAuthenticator and optional TLS by default.
CASSANDRA_TESTS ?= tests.test_cassandra_schema tests.test_cassandra_store tests.test_cassandra_daemons
CASSANDRA_NODE ?= --auth password --tls optional

cassandra-deps:
	@command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven; }

test-cassandra: $(STAMP) debian-deps cassandra-deps
	/usr/bin/python3 tests/cassandra/node run $(CASSANDRA_NODE) -- sh -c '\
	  PYTHONPATH=. $(VPY) -m twisted.trial $(CASSANDRA_TESTS); pypi=$$?; \
	  PYTHONPATH=. /usr/bin/python3 -m twisted.trial $(CASSANDRA_TESTS); debian=$$?; \
	  echo "Cassandra tests: PyPI floor exit $$pypi; Debian 12 floor exit $$debian"; \
	  [ $$pypi = 0 ] && [ $$debian = 0 ]'

# from a copy of the checkout (uncommitted changes to tracked files included),
# so that the build never writes next to the worktree
DEB_DIR := build/deb

deb:
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	tree=$$(git stash create); git archive --format=tar $${tree:-HEAD} | tar -x -C $(DEB_DIR)/src
	@cd $(DEB_DIR)/src && dpkg-checkbuilddeps >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq ./; }
	cd $(DEB_DIR)/src && dpkg-buildpackage -us -uc
	lintian -I --pedantic --fail-on error,warning $(DEB_DIR)/*.changes

# make bench DURATION=10 LATENCIES=0,50,200 RATES=0 FIXED_RATE=1000 PLATFORMS=apple,firebase WORKERS=1,2 PROFILE=1
# make bench AGAINST=/tmp/old-checkout   (each run also with that tree's daemon, alternating)
# make bench FAKE=python   (the Python fakes; the default, auto, is the Node.js one, scripts/bench-fake.mjs, when node
#                          is on PATH: far less CPU per request, so the figures are the daemon's)
DURATION ?= 10
LATENCIES ?= 0,50,200
RATES ?= 0
FIXED_RATE ?= 1000
PLATFORMS ?= apple,firebase
QUEUED ?= 10000
WORKERS ?= 1,2
PROFILE ?=
AGAINST ?=
FAKE ?= auto
BENCH_ARGS ?=

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@if [ -n "$(PROFILE)" ]; then $(VPY) -m pip install --quiet py-spy; fi
	PYTHONPATH=. $(VPY) scripts/bench --duration $(DURATION) --latencies $(LATENCIES) --rates $(RATES) \
	  --fixed-rate $(FIXED_RATE) --platforms $(PLATFORMS) --queued $(QUEUED) --workers $(WORKERS) --fake $(FAKE) \
	  $(if $(PROFILE),--profile) $(if $(AGAINST),--against $(AGAINST)) $(BENCH_ARGS)

# the v2 lines only, with SQLite and then with a one-node Cassandra started for them
bench-v2-cassandra: $(STAMP) cassandra-deps
	@command -v wrk >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	/usr/bin/python3 tests/cassandra/node run -- sh -c 'PYTHONPATH=. $(VPY) scripts/bench --duration $(DURATION) \
	  --latencies "" --fixed-rate 0 --queued 0 --platforms $(PLATFORMS) --cassandra $$SYLKPUSH_CASSANDRA $(BENCH_ARGS)'

# make soak SOAK_DURATION=120 FAULT_EVERY=3 PLATFORMS=apple,firebase
# make soak SOAK_ARGS="--fail-all 500"   (APNs answers 500 to everything; callers keep coming)
SOAK_DURATION ?= 120
FAULT_EVERY ?= 3
SOAK_ARGS ?=

soak: $(STAMP)
	PYTHONPATH=. $(VPY) scripts/soak --duration $(SOAK_DURATION) --fault-every $(FAULT_EVERY) \
	  --platforms $(PLATFORMS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) _trial_temp* build dist *.egg-info run tests/cassandra/target \
	  .hypothesis .mypy_cache config/demo twisted/plugins/dropin.cache
