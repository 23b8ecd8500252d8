# Two set-up commands for a newcomer: `make demo` and `make test`.
# Everything installs into .venv; Debian packages are installed only when run as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the tests drive for real: `cloud-init schema` checks every rendered document,
# nginx-light speaks PROXY protocol, dnsmasq-base is the UDP mode's DNS resolver,
# openssh-server is the ssh provider's host, iproute2 makes its network namespace,
# iperf3 closes connections with data in flight (the test that found a session drop),
# haproxy health-checks exit servers as a cloud load balancer would (--load-balancer).
DEBIAN_PACKAGES := cloud-init nginx-light dnsmasq-base openssh-server iproute2 iperf3 haproxy
export PYTHONASYNCIODEBUG := 1

.PHONY: install system-deps demo fmt lint types test test-kit test-vm cov bench dist vm-image docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	@touch $@

install: $(STAMP)

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi

demo: install
	$(BIN)/python -m inletsctl.demo

fmt: install
	$(BIN)/ruff format inletsctl providers cloud_init tunnel_core tests bench
	$(BIN)/ruff check --fix inletsctl providers cloud_init tunnel_core tests bench

lint: install
	$(BIN)/ruff check .

types: install
	$(BIN)/mypy

# Tests reach only loopback: as root, pytest (alone) runs in a loopback-only network
# namespace (scripts/offline.sh); pytest-socket refuses other in-process connects anyway.
OFFLINE := bash scripts/offline.sh

test: install system-deps lint types
	$(OFFLINE) $(BIN)/pytest -q

cov: install system-deps
	$(OFFLINE) $(BIN)/pytest -q --cov --cov-report=term-missing

# pebble: the ACME server (and its mock DNS, pebble-challtestsrv) that Caddy in the VM
# gets its certificates from in the HTTPS test; installed for test-vm only.
# The provider kit's whole fault matrix for the AWS load-balanced groups (ec2 --count,
# ecs-fargate, --domain): every create step under every fault against moto, several
# minutes; the rest of those providers' tests are in `make test`.
test-kit: install system-deps
	$(OFFLINE) $(BIN)/pytest -q -m kit tests/providers

test-vm: DEBIAN_PACKAGES += pebble
test-vm: install system-deps vm-image
	$(BIN)/pytest -q -m vm -o addopts='' -p no:kmock tests/vm

bench: install
	bash bench/run.sh

dist: install
	$(BIN)/python scripts/build_dist.py

vm-image: install
	bash scripts/vm_image.sh

docs: install
	$(BIN)/pip install --quiet mkdocs
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache *.egg-info
