# The two commands of the README: `make demo` (the main job) and `make test` (every test and notebook).
# Both set up .venv themselves on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-browser demo lab notebooks svgs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

# The notebooks run twice at smoke size: as on this machine (the cpu preset) and as on a Colab GPU (the colab
# preset, here on the CPU), so the branch a Colab user takes is tested on every commit too.
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest
	RETINA_SMOKE=1 RETINA_PRESET=cpu $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/
	RETINA_SMOKE=1 RETINA_PRESET=colab $(PY) -m pytest --nbval-lax --nbval-current-env notebooks/

# Only the browser tests (tests/browser, also part of `make test`): the notebooks' widgets driven in JupyterLab by
# Debian's Chromium (apt-get install chromium).
test-browser: setup
	$(PY) -m pytest tests/browser

# The demo: train the cpu preset on the embedded shapes set from scratch (10 minutes on 2 CPU cores), evaluate it on
# the val split and write out/: metrics.json (COCO AP), loss_curve.png, pr_curve.png, detections/ on val images,
# and model.pt, the trained detector itself (weights, config, class names), which the notebooks load on a fresh clone.
# Training evaluates nothing itself (--val-split ""): the evaluate steps below are the evaluations, with the preset's
# test-time augmentation (the eight turns and mirror images of each image) and without it (metrics_single_view.json).
# Training runs as two processes of one thread each (torchrun, DistributedDataParallel over Gloo), one per core:
# 1.3x the steps in the same time of one process with two threads, between which small convolutions share badly.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning while they wait for each other; on cores shared
# with other processes, spinning made a training step up to 8x slower.
DEMO_RUN := runs/demo
DEMO_ENV := OMP_WAIT_POLICY=PASSIVE
DEMO_PY := $(DEMO_ENV) $(PY)
demo: setup
	$(PY) -m retina data shapes --out data/shapes
	$(DEMO_ENV) OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node 2 \
		-m retina train --preset cpu --data data/shapes --out $(DEMO_RUN) --val-split ""
	$(DEMO_PY) -m retina evaluate --checkpoint $(DEMO_RUN)/last.pt --data data/shapes --split val \
		--out out/metrics.json --pr-curve out/pr_curve.png --class-agnostic
	$(DEMO_PY) -m retina evaluate --checkpoint $(DEMO_RUN)/last.pt --data data/shapes --split val --tta none \
		--out out/metrics_single_view.json
	$(PY) -m retina export $(DEMO_RUN)/last.pt out/model.pt
	cp $(DEMO_RUN)/loss_curve.png out/loss_curve.png
	cp $(DEMO_RUN)/metrics.jsonl out/train_log.jsonl
	$(DEMO_PY) -m retina detect --checkpoint $(DEMO_RUN)/last.pt --out out/detections \
		$$(ls data/shapes/images/val/*.jpg | head -n 6)

lab: setup
	$(VENV)/bin/jupyter lab notebooks

# Stamp the Colab badge and set-up cell (URL from pyproject.toml), then run every notebook for real (no smoke
# switch: 05 trains the cpu preset for its full 10 minutes), save the outputs in place, and keep only the last
# state of each progress bar.
notebooks: setup
	$(PY) notebooks/_header.py
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=3600 \
		notebooks/[0-9]*.ipynb
	$(PY) notebooks/_tidy.py

svgs: setup
	$(PY) -m retina.figures svgs

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
