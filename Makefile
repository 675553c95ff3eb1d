# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROMPT ?= a crab holding a light saber

.PHONY: setup demo call text flow stack doctor test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

## One prompt through generate -> QStash -> image provider -> composite -> Storage -> Twilio,
## then a reply (FOLLOW_UP) that changes the picture.
FOLLOW_UP ?= make it night
demo: setup
	$(PY) -m devstack.demo "$(PROMPT)" --follow-up "$(FOLLOW_UP)"

## Play a phone call through studio/flow.json: the caller says PROMPT. With CHANGE="make it
## night" (or "again"), the same caller calls back and is offered a change to that picture.
## LANG=es (a language of shared/languages/) on the command line makes the caller choose it
## in the call's menu; LANG from the environment is the locale, and is left alone.
CHANGE ?=
CALL_LANGUAGE := $(if $(filter command line,$(origin LANG)),$(LANG))
call: setup
	$(if $(CALL_LANGUAGE),env -u LANG) $(PY) -m devstack.call "$(PROMPT)" --follow-up "$(CHANGE)" \
		$(if $(CALL_LANGUAGE),--language "$(CALL_LANGUAGE)")

## Send a text through studio/flow.json, e.g. make text MESSAGE="DRAW a fox in the snow";
## CHANGE="make it night" then replies with a change.
MESSAGE ?= DRAW $(PROMPT)
text: setup
	$(PY) -m devstack.call --text "$(MESSAGE)" --follow-up "$(CHANGE)"

## Rewrite studio/flow.json from the language catalogues (shared/languages/*.toml).
flow: setup
	$(PY) -m studio.build_flow

## Every stand-in plus both functions, in the foreground; writes .devstack/env.
stack: setup
	$(PY) -m devstack.stack

## Check the stack `make stack` runs (start it in another terminal first), one line per check,
## as `./deploy.sh doctor` checks a deployment; exits non-zero when any check fails.
doctor: setup
	$(PY) -m deploy.doctor --env-file .devstack/env

## The whole test suite.
test: setup
	$(PY) -m pytest

## The unit tests only (no PostgreSQL, no stack, no stand-ins, no linters; about 30 s), then
## a check that the decision tests alone take every branch of the delivery, acceptance,
## conversation and language decisions.
DECISIONS := --cov=shared.delivery_decisions --cov=shared.acceptance_decisions \
	--cov=shared.conversation --cov=shared.person_language --cov-branch \
	--cov-report=term-missing:skip-covered --cov-fail-under=100
test-fast: setup
	$(PY) -m pytest -q -m "not stack and not slow"
	$(PY) -m pytest -q tests/test_decisions_delivery.py tests/test_decisions_acceptance.py \
		tests/test_decisions_conversation.py tests/test_intake_languages.py $(DECISIONS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy shared devstack bench deploy studio tests
	# Each function's entry module is called main: check them one at a time.
	$(PY) -m mypy generate/main.py
	$(PY) -m mypy composite/main.py
	$(PY) -m mypy gallery/main.py

bench: setup
	$(PY) -m bench.composite
	$(PY) -m bench.load
	$(PY) -m bench.cold_start

clean:
	rm -rf .devstack $(VENV) .pytest_cache .mypy_cache .ruff_cache
