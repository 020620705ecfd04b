#!/usr/bin/env bash
# The lent-GPU run (see bench/README.md): the device-parametrized suite on the GPU devices
# and/or needle-bench, writing logs under $OUT. Carry .gl (Vulkan loader debs) and .whl
# (wgpu, cffi, pycparser, rendercanvas, nvmath-python, nvidia-cudnn-frontend wheels); see
# ../shared/GPU_RECIPES.md.
#   bash tools/gpu_run.sh test          # pytest --device cuda,cudnn,webgpu
#   bash tools/gpu_run.sh bench [ARGS]  # needle-bench over every backend
#   bash tools/gpu_run.sh quick         # needle-bench --quick (a smoke test of the GPU paths)
set -o pipefail
mode=${1:-test}; shift || true
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/wgpu-*.whl .whl/cffi-*.whl .whl/pycparser-*.whl .whl/rendercanvas-*.whl \
  .whl/nvmath_python-*.whl .whl/nvidia_cudnn_frontend-*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD XDG_RUNTIME_DIR=/tmp PYTHONUNBUFFERED=1
# the tree copy's .git may be stale: pass the commit in, e.g. NEEDLE_BENCH_COMMIT=$(git rev-parse --short HEAD)
# Each call writes into $OUT/<NAME> (NAME, a plain file name, is $mode unless set) and packs
# it as $OUT/<NAME>.tgz at the end: the lent machine returns at most 8 files from $OUT, two
# folders deep, and a bench run writes more (a command that calls this script several
# times sets NAME apart).
case $mode in test|quick|bench) ;; *) echo "gpu_run.sh: unknown mode $mode (test, quick, bench)" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/out}; DIR="$OUT/${NAME:-$mode}"; mkdir -p "$DIR"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u +%F; echo "commit ${NEEDLE_BENCH_COMMIT:-unknown}"; } > "$DIR/gpu.txt"
case $mode in
  test)  timeout ${TEST_S:-420} python3 -m pytest --device ${DEVICES:-cuda,cudnn,webgpu} -q -p no:cacheprovider -o addopts=-ra "$@" 2>&1 \
           | tee "$DIR/pytest.log" | grep -v "^SKIPPED" | tail -30 ;;
  quick) python3 -m needle.bench --quick --no-progress --out "$DIR/bench" "$@" 2>&1 | tail -60 ;;
  bench) python3 -m needle.bench --no-progress --out "$DIR/bench" "$@" 2>&1 | tee "$DIR/bench.log" | tail -80 ;;
esac
status=$?
tar czf "$DIR.tgz" -C "$OUT" "$(basename "$DIR")" && rm -rf "$DIR" || status=1
exit $status
