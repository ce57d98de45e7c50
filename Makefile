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

.PHONY: help test lint unit e2e tools localstack build release

help:
	@echo "make test      fmt, clippy, cfn-lint, unit tests, end-to-end tests on the embedded LocalStack"
	@echo "make build     debug build of the function"
	@echo "make release   release build: target/release/api-key-rotator"

test: lint unit e2e

$(TOOLS)/.installed: tools/requirements.txt tools/constraints.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt -c tools/constraints.txt
	touch $@

tools: $(TOOLS)/.installed

localstack:
	scripts/localstack.sh install

lint: tools
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	$(TOOLS)/bin/cfn-lint template.yaml

unit:
	cargo test --locked --lib --bins --test adapters

e2e: localstack
	cargo test --locked --test e2e

build:
	cargo build --locked

release:
	cargo build --locked --release
