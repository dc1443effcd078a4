# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv browser clean readme-config

venv: $(STAMP)

# torch/torchvision come from the local wheel cache on the dev machines (pinned in requirements.txt).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	@set -e; start=$$(date +%s); \
	$(BIN)/seglab data synth --out demo_data; \
	rm -rf runs/demo; \
	$(BIN)/seglab train configs/demo.yaml --out runs/demo; \
	$(BIN)/seglab evaluate runs/demo --split val > runs/demo/evaluate_val.json; \
	$(BIN)/seglab predict runs/demo --split test --out runs/demo/submission.csv; \
	$(BIN)/seglab predict runs/demo --split test --format png --out runs/demo/pred_png; \
	echo; echo "== seglab demo finished in $$(( $$(date +%s) - start )) s =="; \
	echo "example data      demo_data/ (train.json, val.json, test.json, batch_0X_vt/*.jpg)"; \
	echo "run folder        runs/demo/"; \
	echo "resolved config   runs/demo/config.yaml"; \
	echo "best metrics      runs/demo/metrics.json  (mIoU $$($(BIN)/python -c 'import json;print(round(json.load(open("runs/demo/metrics.json"))["mIoU"],4))'))"; \
	echo "evaluation        runs/demo/evaluate_val.json"; \
	echo "checkpoints       runs/demo/checkpoints/best.ckpt, last.ckpt"; \
	echo "panels            runs/demo/viz/"; \
	echo "TensorBoard       $(BIN)/tensorboard --logdir runs/demo/tb"; \
	echo "submission        runs/demo/submission.csv, runs/demo/pred_png/"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf demo_data runs/demo

# The README's config reference is generated from the schema (a test checks it is current).
readme-config: $(STAMP)
	$(BIN)/python -m seglab.config --update-readme README.md

# Competition-B example: multi-label polygons, thresholds tuned on val, an RLE submission.
.PHONY: demo-multilabel
demo-multilabel: $(STAMP)
	@set -e; start=$$(date +%s); \
	$(BIN)/seglab data synth --format polygons --out demo_polygons; \
	rm -rf runs/demo_multilabel; \
	$(BIN)/seglab train configs/demo_multilabel.yaml --out runs/demo_multilabel; \
	$(BIN)/seglab tune-thresholds runs/demo_multilabel; \
	$(BIN)/seglab evaluate runs/demo_multilabel --split val --original-size > runs/demo_multilabel/evaluate_val.json; \
	$(BIN)/seglab predict runs/demo_multilabel --split test --format rle --out runs/demo_multilabel/submission.csv; \
	echo; echo "== seglab multilabel demo finished in $$(( $$(date +%s) - start )) s =="; \
	echo "best metrics      runs/demo_multilabel/metrics.json  (Dice $$($(BIN)/python -c 'import json;print(round(json.load(open("runs/demo_multilabel/metrics.json"))["dice"],4))'))"; \
	echo "tuned thresholds  runs/demo_multilabel/thresholds.json"; \
	echo "evaluation        runs/demo_multilabel/evaluate_val.json"; \
	echo "submission        runs/demo_multilabel/submission.csv (image_name,class,rle)"
