# Sylk Pushserver: everything a developer needs, from a fresh machine.
#   make run    create .venv and start the daemon (with the demo fakes) on ./config
#   make test   create .venv and run the trial suite
#   make test-debian   run the suite on Debian 12's packaged libraries (/usr/bin/python3)
#   make bench  throughput, added latency and memory against the fakes (installs wrk; PROFILE=1: py-spy)
#   make soak   faults injected repeatedly under load; lost / duplicated / peak RSS

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := python3-twisted python3-treq python3-h2 python3-jwt python3-google-auth \
	python3-openssl python3-service-identity python3-systemd python3-prometheus-client \
	python3-hypothesis
TESTS ?= tests

.PHONY: run test test-debian debian-deps bench soak clean

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	PYTHONPATH=. $(VPY) scripts/demo-run

test: $(STAMP)
	PYTHONPATH=. $(VPY) -m twisted.trial $(TESTS)

debian-deps:
	@dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES); }

test-debian: debian-deps
	PYTHONPATH=. /usr/bin/python3 -m twisted.trial $(TESTS)

# make bench DURATION=10 LATENCIES=0,50,200 RATES=0 FIXED_RATE=1000 PLATFORMS=apple,firebase PROFILE=1
DURATION ?= 10
LATENCIES ?= 0,50,200
RATES ?= 0
FIXED_RATE ?= 1000
PLATFORMS ?= apple,firebase
QUEUED ?= 10000
PROFILE ?=
BENCH_ARGS ?=

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@if [ -n "$(PROFILE)" ]; then $(VPY) -m pip install --quiet py-spy; fi
	PYTHONPATH=. $(VPY) scripts/bench --duration $(DURATION) --latencies $(LATENCIES) --rates $(RATES) \
	  --fixed-rate $(FIXED_RATE) --platforms $(PLATFORMS) --queued $(QUEUED) \
	  $(if $(PROFILE),--profile) $(BENCH_ARGS)

# make soak SOAK_DURATION=120 FAULT_EVERY=3 PLATFORMS=apple,firebase
# make soak SOAK_ARGS="--fail-all 500"   (APNs answers 500 to everything; callers keep coming)
SOAK_DURATION ?= 120
FAULT_EVERY ?= 3
SOAK_ARGS ?=

soak: $(STAMP)
	PYTHONPATH=. $(VPY) scripts/soak --duration $(SOAK_DURATION) --fault-every $(FAULT_EVERY) \
	  --platforms $(PLATFORMS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) _trial_temp* build dist *.egg-info run
