# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CACHE ?= cache
SYNTH := $(CACHE)/synthetic_wider
# Keep TF and XLA quiet and off any GPU in the tests.
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test test-all lint format bench clean

venv: $(STAMP)

# Re-installs only when the package metadata changed (idempotent).
$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

$(SYNTH)/synthetic_info.json: | $(STAMP)
	$(PY) tools/make_synthetic_wider.py --out $(SYNTH) --train 1000 --val 300 --seed 0 --crops 128

# The end-to-end slice that exists so far: synthetic WIDER FACE -> blur anonymization (paper
# setting) -> leak audit (its findings are printed, not a demo failure) -> the image and
# identity metrics of the blurred faces (~5 min) -> the detector's
# training pipeline on the anonymized copy (picture + throughput) -> the DSFD smoke training on
# the original and on the blurred train split (a few minutes each on 2 cores), both evaluated
# on the unaltered val split -> their APs and PR curves side by side (the paper's question in
# miniature) -> the report of those two runs (Fig. 4, Fig. 6; Table II needs more methods).
demo: $(STAMP) $(SYNTH)/synthetic_info.json
	$(PY) launch/anonymize.py --config=configs/anonymize/blur.py:smoke
	@mkdir -p $(CACHE)/demo
	$(PY) tools/audit_anonymized.py --orig $(SYNTH) --anon $(SYNTH)_blur --identity_min_px 96 \
		--json $(CACHE)/demo/audit_blur.json --no_progress --max_list 5 \
		|| echo "audit: exit status $$? (leaks listed above; details in $(CACHE)/demo/audit_blur.json)"
	$(PY) launch/metrics.py --orig $(SYNTH) --anon $(SYNTH)_blur --out $(CACHE)/demo/metrics_blur.json
	$(PY) launch/inspect_data.py --config=configs/dsfd_original.py:smoke \
		--config.data.train_root=$(SYNTH)_blur --workdir=$(CACHE)/demo
	rm -rf $(CACHE)/demo/dsfd_original
	$(PY) launch/train.py --config=configs/dsfd_original.py:smoke --workdir=$(CACHE)/demo/dsfd_original
	rm -rf $(CACHE)/demo/dsfd_blur
	$(PY) launch/train.py --config=configs/dsfd_blur.py:smoke --workdir=$(CACHE)/demo/dsfd_blur
	$(PY) tools/wider_eval.py --gt $(SYNTH) --pred $(CACHE)/demo/dsfd_original/predictions \
		--label original --pred $(CACHE)/demo/dsfd_blur/predictions --label blur \
		--json $(CACHE)/demo/ap_original_vs_blur.json --plot $(CACHE)/demo/pr_original_vs_blur.png
	$(PY) launch/report.py --runs $(CACHE)/demo/dsfd_original --runs $(CACHE)/demo/dsfd_blur \
		--metrics $(CACHE)/demo/metrics_blur.json \
		--out $(CACHE)/demo/report

# The TFDS records the tests prepare go to a fresh temporary folder, removed afterwards (not
# into the user's cache, data/tfds_wider.py's default).
# One code style: `ruff format` (settings in pyproject.toml); `make format` applies it.
lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	@tfds=$$(mktemp -d) && SAFEFAKES_TFDS_DIR=$$tfds $(PY) -m pytest -n 2 --dist loadgroup -q; \
		status=$$?; rm -rf "$$tfds"; exit $$status

test-all: lint
	@tfds=$$(mktemp -d) && SAFEFAKES_TFDS_DIR=$$tfds $(PY) -m pytest -n 2 --dist loadgroup -q -m ''; \
		status=$$?; rm -rf "$$tfds"; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/input_pipeline.py

clean:
	rm -rf $(VENV) $(CACHE)
