# Set-up is part of every target: on a fresh clone `make demo` and `make test` each install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch must come first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint fmt bench bench-llamacpp bench-ort wheels-for-device clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,coreml]"
	touch $(STAMP)

setup: $(STAMP)

## Export the built-in default (LLaVA-1.5-7B vision tower + projector, random weights) to ONNX with K = 64,
## then run a generated photo through it into the LLaVA-1.5-7B-shaped language model (random, 2 layers on CPU).
demo: $(STAMP)
	$(BIN)/hiprune-export --target onnx --keep 64 --output out/demo-onnx-k64 --force
	$(BIN)/python -c "from PIL import Image as I; g = I.linear_gradient('L'); \
	I.merge('RGB', (g, I.radial_gradient('L'), g.rotate(90))).resize((480, 360)).save('out/demo-photo.png')"
	$(BIN)/hiprune-run out/demo-onnx-k64 --image out/demo-photo.png --prompt "What is in the picture?" \
	  --json out/demo-run.json

## The CPU test suite (offline, no GPU): what CI runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hiprune tests bench
	$(BIN)/mypy hiprune

fmt: $(STAMP)
	$(BIN)/ruff format hiprune tests bench
	$(BIN)/ruff check --fix hiprune tests bench

## CPU time to first token through the chain, full vs keep 64 (default model, 2 LLM layers); prints JSON and
## writes out/bench-cpu/bench.{json,md,png}. Needs >= 10 GB free memory.
bench: $(STAMP)
	$(BIN)/python bench/ttft_cpu.py --llm-runtime transformers,onnxruntime --repeats 11 --out out/bench-cpu

## The same with the llama.cpp runtime at float16 and q8_0. Installs the llamacpp extra first: llama-cpp-python
## compiles llama.cpp (about 8 minutes on 2 cores, once) with portable x86 kernels (AVX2), since a -march=native
## build stopped with "Illegal instruction" on the CPU machine these numbers come from; LLAMA_CMAKE_ARGS= for native.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
bench-llamacpp: $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet -e ".[llamacpp]"
	$(BIN)/python bench/ttft_cpu.py --llm-runtime llama.cpp@float16,llama.cpp@q8_0 --repeats 11 --out out/bench-cpu

## ORT CPU latency of the encoder artifact, pruned vs --no-prune, and default-model export cost; prints JSON.
bench-ort: $(STAMP)
	$(BIN)/python bench/ort_overhead.py

## The wheels the GPU machine lacks (it reaches no package index) into .whl/ (git-ignored, < 1 MiB): this project
## and the pure-Python packages missing or older there. The device call of bench/gpu_session.sh carries .whl.
wheels-for-device: $(STAMP)
	PYTHON=$(BIN)/python bash bench/gpu_session.sh --wheels

clean:
	rm -rf out .pytest_cache
