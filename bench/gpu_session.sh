#!/usr/bin/env bash
# The GPU benchmarks in one device call, each step under its own timeout so that the whole stays within SESSION_S
# (default 540 s): offline install, environment check, on the device the tests that need torchvision (absent from
# the CPU machine's torch build: preprocessing with the torchvision image processor; 90 s at most), then
# bench/ttft_gpu.py (the time to first token, the deliverable) with all the budget but OVERHEAD_MIN (60 s), then
# bench/gpu_overhead.py with what is left (at most 150 s; skipped, with a line, when under 60 s are left).
# JSON and logs go to $OUT (the device's result folder; out/gpu-session elsewhere), 8 files at most:
# session.log, device_tests.log, gpu_overhead.{json,log}, ttft_gpu.{json,log}, bench-graphs.json, bench-eager.json.
#
#   here, before the call:   make wheels-for-device            (fills .whl/, git-ignored, well under 1 MiB)
#   the device call:         bash bench/gpu_session.sh         (carry [".whl"], timeout_s 600)
#   here, a CPU smoke run:   bash bench/gpu_session.sh --cpu-smoke   (a tiny checkpoint, under a minute)
#
# Environment: PYTHON (python3), OUT, SESSION_S (540), TTFT_CONFIGS (graphs,eager; add compiled to try
# torch.compile), TTFT_REPEATS (20), OVERHEAD_RUNS (200).
set -u -o pipefail
PY=${PYTHON:-python3}
MODE=${1:-device}
WHEELS=.whl
SITE=${SITE:-/tmp/hiprune-site}
START=$SECONDS

say() { echo "[gpu_session +$((SECONDS - START))s] $*" | tee -a "$LOG"; }
fail() { say "error: $*"; exit 2; }
left() { echo $((SESSION_S - (SECONDS - START))); }

gather_wheels() {
    # Pure-Python wheels the GPU image lacks or holds in an older version than the one tested here, pinned to
    # this machine's versions, plus this project's own wheel (for its metadata: the artifact cache keys on it).
    rm -rf "$WHEELS" && mkdir -p "$WHEELS" || exit 2
    local pins
    pins=$("$PY" -c "from importlib.metadata import version as v
print(' '.join(f'{n}=={v(n)}' for n in ('onnx-ir', 'onnxconverter-common')))") || exit 2
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" $pins || exit 2
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . || exit 2
    ls -l "$WHEELS" && du -sh "$WHEELS"
}

install_here() {
    # Nothing can be fetched on the GPU machine: the carried wheels go to $SITE, ahead of its own packages;
    # the working tree comes first so the code that runs is this checkout's.
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            "$WHEELS"/*.whl >>"$LOG" 2>&1 || fail "installing $WHEELS/*.whl failed (see session.log)"
        say "installed: $(cd "$WHEELS" && echo *.whl)"
    else
        say "warning: no $WHEELS/ here (run 'make wheels-for-device' and carry .whl): the device's own onnx-ir is" \
            "used and, without this project's metadata, each configuration re-exports its artifacts"
    fi
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
}

check_env() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
    fi
    "$PY" - "$DEVICE" <<'EOF' 2>&1 | tee -a "$LOG" || fail "the environment check failed (above)"
import importlib.metadata as m, sys
import torch
names = ("hiprune-export", "torch", "transformers", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "tokenizers",
         "huggingface-hub", "numpy", "matplotlib")
versions = {}
for name in names:
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        versions[name] = None
print("versions:", versions)
import hiprune, hiprune.bench, hiprune.runtime.chain  # noqa: E401,F401  (the code under test imports)
print("hiprune from", hiprune.__file__)
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("torch.cuda.is_available() is False")
    free, total = torch.cuda.mem_get_info()
    print(f"cuda: {torch.cuda.get_device_name()}, torch.version.cuda {torch.version.cuda}, "
          f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
EOF
}

tiny_checkpoint() {
    # The test suite's tiny LLaVA (tokenizer and image processor included), for smoke runs of the plumbing.
    "$PY" - "$1" <<'EOF' || fail "building the tiny checkpoint failed"
import importlib.util, sys
from pathlib import Path

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

target = Path(sys.argv[1])
if not (target / "config.json").is_file():
    load("tests_conftest", "tests/conftest.py").make_tiny_llava(target, image_size=48)
    load("runtime_conftest", "tests/runtime/conftest.py").add_text_side(target)
EOF
}

run_step() {  # name, timeout seconds, command...
    local name=$1 limit=$2 rc
    shift 2
    if [ "$limit" -lt 30 ]; then
        say "$name skipped: only ${limit}s of the session left"
        return 1
    fi
    say "$name (timeout ${limit}s): $*"
    timeout -k 10 "$limit" "$@" >>"$OUT/$name.log" 2>&1
    rc=$?
    case $rc in 124 | 137) say "$name timed out after ${limit}s: its JSON holds what it finished" ;; esac
    say "$name exit $rc; its progress lines:"
    grep -E '^[a-z_]+: ' "$OUT/$name.log" | tail -n 6 | tee -a "$LOG"
    [ "$rc" = 0 ] || tail -n 3 "$OUT/$name.log" | tee -a "$LOG"
    return "$rc"
}

case "$MODE" in
--wheels) gather_wheels; exit ;;
--cpu-smoke)
    DEVICE=cpu OUT=${OUT:-out/gpu-session-smoke} SESSION_S=${SESSION_S:-300} OVERHEAD_CAP=90 OVERHEAD_MIN=60
    BENCH_DIR=out/gpu-session-smoke-bench
    SMOKE_MODEL=out/gpu-session-smoke-model
    OVERHEAD_ARGS=(--device cpu --model "$SMOKE_MODEL" --keep 8 --dtype fp32 --runs "${OVERHEAD_RUNS:-3}")
    TTFT_ARGS=(--device cpu --model "$SMOKE_MODEL" --keep 8 --repeats "${TTFT_REPEATS:-2}") ;;
device)
    DEVICE=cuda OUT=${OUT:-out/gpu-session} SESSION_S=${SESSION_S:-540} OVERHEAD_CAP=150 OVERHEAD_MIN=60
    BENCH_DIR=out/bench-gpu
    OVERHEAD_ARGS=(--runs "${OVERHEAD_RUNS:-200}")
    TTFT_ARGS=(--repeats "${TTFT_REPEATS:-20}") ;;
*) echo "error: unknown mode '$MODE'; use no argument (the GPU machine), --cpu-smoke or --wheels" >&2; exit 2 ;;
esac

mkdir -p "$OUT" || exit 2
LOG=$OUT/session.log
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
say "mode $MODE, device $DEVICE, results in $OUT, session budget ${SESSION_S}s"
install_here
check_env
[ "$MODE" = --cpu-smoke ] && tiny_checkpoint "$SMOKE_MODEL"
if [ "$MODE" = device ]; then
    run_step device_tests 90 "$PY" -m pytest -q -p no:cacheprovider tests/runtime/test_preprocess.py \
        tests/runtime/test_chain.py -k "torchvision or device or host"
fi

# 25 s: a timed-out step's 10 s kill grace, and the summary at the end
run_step ttft_gpu "$(($(left) - OVERHEAD_MIN - 25))" "$PY" bench/ttft_gpu.py "${TTFT_ARGS[@]}" --out "$BENCH_DIR" \
    --configs "${TTFT_CONFIGS:-graphs,eager}" --json "$OUT/ttft_gpu.json"
ttft_rc=$?
for config in graphs eager; do
    [ -f "$BENCH_DIR/$config/bench.json" ] && cp "$BENCH_DIR/$config/bench.json" "$OUT/bench-$config.json"
done
overhead_limit=$(($(left) - 15))
[ "$overhead_limit" -gt "$OVERHEAD_CAP" ] && overhead_limit=$OVERHEAD_CAP
if [ "$overhead_limit" -lt "$OVERHEAD_MIN" ]; then
    say "gpu_overhead skipped: only ${overhead_limit}s of the session left, it needs ${OVERHEAD_MIN}s"
else
    run_step gpu_overhead "$overhead_limit" "$PY" bench/gpu_overhead.py "${OVERHEAD_ARGS[@]}" \
        --json "$OUT/gpu_overhead.json"
fi
say "done in $((SECONDS - START))s; results:"
for file in "$OUT"/ttft_gpu.json "$OUT"/gpu_overhead.json; do  # ttft_gpu: goal; gpu_overhead: ratios, goals
    [ -f "$file" ] && "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); \
print(sys.argv[1], json.dumps({k: d[k] for k in ('goal', 'ratio_pruned_over_full', 'goals') if k in d}))" "$file" \
        | tee -a "$LOG"
done
exit "$ttft_rc"
