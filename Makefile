# api-key-rotator: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every local run uses dummy credentials, a region, and no EC2 metadata lookups: without them
# the SDK's credential chain would call 169.254.169.254.
export AWS_EC2_METADATA_DISABLED := true
export AWS_ACCESS_KEY_ID := test
export AWS_SECRET_ACCESS_KEY := test
export AWS_REGION := us-east-1
export AWS_DEFAULT_REGION := us-east-1
unexport AWS_PROFILE AWS_SESSION_TOKEN

TOOLS := .local/tools-venv
PYTHON ?= python3

.PHONY: help test lint audit unit e2e bench bench-fleet tools localstack moto build release release-check shipped-check demo lambda-tools sam up down seed watch invoke rotate sweep status ops

help:
	@echo "make demo      rotate a partner's key through a key-enforcing gateway on the embedded local AWS"
	@echo "make test      fmt, clippy, cfn-lint, cargo deny, unit and property tests, end-to-end tests (fault matrix included)"
	@echo "make build     the release bootstrap.zip (arm64 if its target is installed, else x86_64) and its size"
	@echo "make release   release build: target/release/api-key-rotator"
	@echo "make bench     cold init, peak RSS, step times, AWS calls, zip size, status --all over OPS=300 secrets;"
	@echo "               SWEEP=300: the retirement sweep over SWEEP secrets, nothing due then all due (SWEEP=0 skips it)"
	@echo "               FLEET=N: the fleet mode (FLEET=0 skips it)"
	@echo "               (FLEET_MODEL=strict|lenient Secrets Manager re-runs, FLEET_TIMEOUT=seconds per invocation, sweep's too)"
	@echo "make release-check         the release binary rotates under the Lambda Runtime API (e2e)"
	@echo "make shipped-check         the bootstrap in make build's zip rotates under the Lambda Runtime API (e2e)"
	@echo "make sam                   the deploy path, offline: sam validate --lint, sam build (x86_64), pinned SAM CLI"
	@echo "make up / down             start / stop a local AWS for hand-driven runs (.local/dev), with an example partner"
	@echo "make seed [POLICY=disable] [GRACE=2m]  another example partner (API, plan, first key, tagged secret) on it"
	@echo "make watch                 the function under cargo lambda watch, against that local AWS"
	@echo "make invoke STEP=createSecret SECRET=name TOKEN=token   one step through cargo lambda invoke"
	@echo "make rotate SECRET=name    RotateSecret, then the four steps, as Secrets Manager does"
	@echo "make sweep                 the retirement sweep (keys whose grace period ended), as the schedule invokes it"
	@echo "make status [SECRET=name]  the operator command api-key-rotator status (every secret without SECRET)"
	@echo "make ops ARGS=\"check name\"  any operator command (docs/operator-commands.md), against that local AWS"

test: lint audit unit e2e

$(TOOLS)/.installed: tools/requirements.txt tools/constraints.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt -c tools/constraints.txt
	touch $@

tools: $(TOOLS)/.installed

localstack:
	scripts/localstack.sh install

# moto, pinned, in its own venv: the e2e case the_model_fakes_in_aws_mode_behave_as_moto holds the
# model's fakes, in their AWS mode, to it where it is faithful to AWS (docs/local-aws.md).
MOTO := .local/moto-venv
$(MOTO)/.installed: tools/moto-requirements.txt tools/moto-constraints.txt
	rm -rf $(MOTO)
	$(PYTHON) -m venv $(MOTO)
	$(MOTO)/bin/pip install -q --disable-pip-version-check -r tools/moto-requirements.txt -c tools/moto-constraints.txt
	touch $@

moto: $(MOTO)/.installed

# cargo-deny, pinned, built from crates.io into .local/cargo-tools. Advisories are not checked:
# their database lives outside the registries these machines reach (see docs/reliability.md).
CARGO_DENY := .local/cargo-tools/bin/cargo-deny
CARGO_DENY_VERSION := 0.20.2
$(CARGO_DENY):
	cargo install --locked --quiet --root .local/cargo-tools cargo-deny --version $(CARGO_DENY_VERSION)

audit: $(CARGO_DENY)
	$(CARGO_DENY) check licenses bans sources

lint: tools
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	$(TOOLS)/bin/cfn-lint template.yaml
	$(TOOLS)/bin/python tests/template_policy.py template.yaml
	$(TOOLS)/bin/python tests/docs_truth.py

unit:
	cargo test --locked --lib --bins --test adapters --test properties --test model --test grace_races

e2e: localstack moto
	cargo test --locked --test e2e

# The Lambda zip: arm64 when the aarch64 target is installed, else x86_64 (CI packages x86_64:
# the aarch64 target is a rustup download no registry guarantees).
build: lambda-tools
	scripts/build.sh

release:
	cargo build --locked --release

# The release binary under the Lambda Runtime API, rotating through the fault proxy.
release-check: release localstack
	ROTATOR_BINARY=$(CURDIR)/target/release/api-key-rotator cargo test --locked --test e2e -- the_binary_rotates

# The bootstrap that ships (the zip make build packed, unzipped to a temporary directory) under
# the Lambda Runtime API, rotating through the fault proxy: one e2e case. CI runs it after make
# build.
ZIP := target/lambda/api-key-rotator/bootstrap.zip
shipped-check: localstack
	@test -f $(ZIP) || { echo "no $(ZIP): run make build first" >&2; exit 1; }
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
	unzip -q $(ZIP) bootstrap -d "$$dir" && \
	echo "the shipped bootstrap: $(ZIP) ($$(sha256sum "$$dir/bootstrap" | cut -c1-16))" && \
	ROTATOR_BINARY="$$dir/bootstrap" cargo test --locked --test e2e -- the_binary_rotates_under_the_lambda_runtime_api

LAMBDA := .local/lambda-venv
DEV := .local/dev
WATCH_PORT ?= 9000

$(LAMBDA)/.installed: tools/lambda-requirements.txt tools/lambda-constraints.txt
	rm -rf $(LAMBDA)
	$(PYTHON) -m venv $(LAMBDA)
	$(LAMBDA)/bin/pip install -q --disable-pip-version-check -r tools/lambda-requirements.txt -c tools/lambda-constraints.txt
	touch $@

lambda-tools: $(LAMBDA)/.installed

# The deploy path as far as it runs without an account: the README's `sam build`, from a pinned SAM
# CLI, with cargo-lambda on PATH. x86_64, because the aarch64 target may not be installed (see
# make build). Nothing phones home: telemetry is off, and SAM's weekly version check (a GET to
# pypi.org after each command) is skipped by a fresh lastVersionCheck in SAM's own settings
# directory, which __SAM_CLI_APP_DIR moves into .local (not the user's ~/.aws-sam).
# `sam validate --lint` runs cfn-lint locally; without --lint it would build an IAM client.
SAM := .local/sam-venv
SAM_HOME := .local/sam-home
$(SAM)/.installed: tools/sam-requirements.txt tools/sam-constraints.txt
	rm -rf $(SAM)
	$(PYTHON) -m venv $(SAM)
	$(SAM)/bin/pip install -q --disable-pip-version-check -r tools/sam-requirements.txt -c tools/sam-constraints.txt
	touch $@

sam: $(SAM)/.installed lambda-tools
	@mkdir -p $(SAM_HOME)
	@$(SAM)/bin/python -c 'import json, sys, time; json.dump({"telemetryEnabled": False, "lastVersionCheck": time.time()}, open(sys.argv[1], "w"))' $(SAM_HOME)/metadata.json
	SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR=$(CURDIR)/$(SAM_HOME) $(SAM)/bin/sam validate --lint --template-file template.yaml
	SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR=$(CURDIR)/$(SAM_HOME) PATH=$(CURDIR)/$(LAMBDA)/bin:$$PATH \
	  $(SAM)/bin/sam build --template-file template.yaml --build-dir .local/sam-build --parameter-overrides Architecture=x86_64
	@ls -l .local/sam-build/Rotator/bootstrap

demo:
	scripts/demo.sh

up: localstack
	scripts/localstack.sh start $(DEV)
	@$(MAKE) -s seed

# An example partner (API, plan, first key, tagged secret) on the local AWS `make up` started.
seed:
	@test -f $(DEV)/endpoint || { echo "no local AWS: run 'make up' first"; exit 1; }
	.local/localstack-venv/bin/python scripts/seed.py --endpoint $$(cat $(DEV)/endpoint) $(if $(POLICY),--policy $(POLICY)) $(if $(GRACE),--grace $(GRACE))

down:
	scripts/localstack.sh stop $(DEV)

watch: lambda-tools
	@test -f $(DEV)/endpoint || { echo "no local AWS: run 'make up' first"; exit 1; }
	@# As root, in a PID namespace of its own: cargo lambda watch signals widely when it stops.
	AWS_ENDPOINT_URL=$$(cat $(DEV)/endpoint) $$( [ "$$(id -u)" = 0 ] && echo unshare -fp --mount-proc --kill-child ) \
	  $(LAMBDA)/bin/cargo-lambda lambda watch -A 127.0.0.1 -P $(WATCH_PORT)

invoke: lambda-tools
	@test -n "$(STEP)" -a -n "$(SECRET)" -a -n "$(TOKEN)" || { echo "usage: make invoke STEP=createSecret SECRET=name TOKEN=token"; exit 1; }
	$(LAMBDA)/bin/cargo-lambda lambda invoke api-key-rotator --invoke-address 127.0.0.1 --invoke-port $(WATCH_PORT) \
	  --data-ascii '{"Step":"$(STEP)","SecretId":"$(SECRET)","ClientRequestToken":"$(TOKEN)"}'

rotate: lambda-tools
	@test -n "$(SECRET)" || { echo "usage: make rotate SECRET=name"; exit 1; }
	.local/localstack-venv/bin/python scripts/rotate.py --endpoint $$(cat $(DEV)/endpoint) \
	  --invoke-port $(WATCH_PORT) --cargo-lambda $(LAMBDA)/bin/cargo-lambda $(SECRET)

# The retirement sweep, as the template's EventBridge rule invokes it every SweepIntervalMinutes.
sweep: lambda-tools
	$(LAMBDA)/bin/cargo-lambda lambda invoke api-key-rotator --invoke-address 127.0.0.1 --invoke-port $(WATCH_PORT) \
	  --data-ascii '{"Action":"retire-expired-keys"}'

# The operator commands against the local AWS of `make up` (the same binary, without
# AWS_LAMBDA_RUNTIME_API).
ops:
	@test -f $(DEV)/endpoint || { echo "no local AWS: run 'make up' first"; exit 1; }
	@cargo build --locked --quiet
	AWS_ENDPOINT_URL=$$(cat $(DEV)/endpoint) target/debug/api-key-rotator $(ARGS)

status:
	@$(MAKE) -s ops ARGS="status $(if $(SECRET),$(SECRET),--all)"

FLEET ?= 100
# Secrets `api-key-rotator status --all` is measured over.
OPS ?= 300
# Secrets the retirement sweep is measured over (each with one key in grace: nothing due, then all due).
SWEEP ?= 300
# strict: a failed rotation re-run at most 5 times, 2 s apart; lenient: 20 tries, pauses to 30 s.
FLEET_MODEL ?= strict
# Each invocation's deadline, in seconds; empty: the template's Timeout.
FLEET_TIMEOUT ?=

# Figures, not timed tests: the release binary under a Lambda Runtime API stand-in.
# It measures the bootstrap that ships (cargo-lambda's x86_64 build); when the zip is arm64, which
# cannot run here, the host's release build stands in.
bench: build release localstack
	@bin=$(CURDIR)/target/x86_64-unknown-linux-gnu/release/api-key-rotator; \
	if [ "$$(cat target/lambda/api-key-rotator/ARCH)" != x86_64 ] || [ ! -x "$$bin" ]; then \
	  bin=$(CURDIR)/target/release/api-key-rotator; fi; \
	args="--operator $(OPS) --sweep $(SWEEP) --fleet $(FLEET) --model $(FLEET_MODEL)$(if $(FLEET_TIMEOUT), --timeout $(FLEET_TIMEOUT))"; \
	echo "ROTATOR_BINARY=$$bin cargo bench --locked --bench bench -- $$args"; \
	ROTATOR_BINARY=$$bin cargo bench --locked --bench bench -- $$args
