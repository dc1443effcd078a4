# Two commands set everything up from a fresh clone: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-cls test venv extras browser clean readme-config gpu-check-prep gpu-tables

venv: $(STAMP)

# torch/torchvision come from the local wheel cache on the dev machines (pinned in requirements.txt).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# Optional extras (seglab[mlflow], seglab[tune], ...), each pinned in its own requirements-<extra>.txt;
# installed together, under requirements.txt's pins, so no extra moves torch or another core package.
EXTRA_REQS := $(sort $(filter-out requirements-dev.txt,$(wildcard requirements-*.txt)))
EXTRAS_STAMP := $(VENV)/.extras
extras: $(EXTRAS_STAMP)
$(EXTRAS_STAMP): $(STAMP) $(EXTRA_REQS)
	$(BIN)/pip install -q -c requirements.txt $(addprefix -r ,$(EXTRA_REQS))
	touch $@

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
	rm -rf demo_data runs/demo demo_cls_data runs/demo_cls

# The README's config reference is generated from the schema (a test checks it is current).
readme-config: $(STAMP)
	$(BIN)/python -m seglab.config.reference --update-readme README.md

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

# The classification example (competition C layout): synthetic faces, 18 mask x gender x age classes.
# One thread per process: on 48-pixel images two threads fighting over a shared CPU are far slower.
demo-cls: $(STAMP)
	@set -e; export OMP_NUM_THREADS=1; start=$$(date +%s); \
	$(BIN)/seglab data synth --format maskstatus --out demo_cls_data; \
	rm -rf runs/demo_cls; \
	$(BIN)/seglab train configs/demo_cls.yaml --out runs/demo_cls; \
	$(BIN)/seglab evaluate runs/demo_cls --split val > runs/demo_cls/evaluate_val.json; \
	$(BIN)/seglab predict runs/demo_cls --out runs/demo_cls/info.csv; \
	echo; echo "== seglab classification demo finished in $$(( $$(date +%s) - start )) s =="; \
	echo "example data      demo_cls_data/ (train/train.csv, train/images/<person>/, eval/info.csv, eval/images/)"; \
	echo "best metrics      runs/demo_cls/metrics.json  (macro F1 $$($(BIN)/python -c 'import json;print(round(json.load(open("runs/demo_cls/metrics.json"))["macro_f1"],4))'))"; \
	echo "evaluation (TTA)  runs/demo_cls/evaluate_val.json"; \
	echo "validation PNGs   runs/demo_cls/viz/ (misclassified examples, confusion matrix, per-class F1)"; \
	echo "submission        runs/demo_cls/info.csv"

# The GPU check's luggage, git-ignored (benchmarks/README.md, "GPU check"): the wheels the GPU
# machine's image lacks (CPython 3.12, x86-64; the pins of requirements.txt and the
# dependencies they bring), and a subset of the trashbags data (400 training images and the
# valid split): about 45 MB, under the 64 MB a GPU call can carry with the repository.
TRASHBAGS ?= ../shared/data/trashbags
GPU_WHEELS := segmentation-models-pytorch==0.6.0 albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16 \
	stringzilla==5.3.2 pycocotools==2.0.11 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 \
	typing-inspection==0.4.5 typing-extensions==4.16.0 iterative-stratification==0.1.9
GPU_SDISTS := adamp==0.3.0
gpu-check-prep: $(STAMP)
	rm -rf benchmarks/wheels benchmarks/gpu_data
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d benchmarks/wheels $(GPU_WHEELS)
	$(BIN)/pip wheel -q --no-deps -w benchmarks/wheels $(GPU_SDISTS)
	$(BIN)/python benchmarks/gpu_check.py --prepare-data benchmarks/gpu_data/trashbags --data $(TRASHBAGS)
	du -sh benchmarks/wheels benchmarks/gpu_data

# benchmarks/README.md's GPU tables, from benchmarks/results/*.json (a test checks they are current).
gpu-tables: $(STAMP)
	$(BIN)/python benchmarks/gpu_tables.py --update benchmarks/README.md
