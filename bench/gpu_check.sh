#!/usr/bin/env bash
# The deep stage's checks on a lent GPU, in one call: the deep tests (CUDA paths included) and the
# fine-tune benchmark on CUDA and on CPU (one torch thread). Needs only python3 + numpy + torch (+ pytest
# when present, else doctests and a CUDA smoke round); installs nothing. Results go under $OUT.
#   OUT=/tmp/gpu bench/gpu_check.sh            # on the GPU machine
#   STREAMREC_DEVICE=cpu OUT=/tmp/gpu bench/gpu_check.sh   # prove it here, CPU forced
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
DEVICE="${STREAMREC_DEVICE:-cuda}"
export STREAMREC_DEVICE="$DEVICE" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

{ nvidia-smi || true; "$PY" -c "import sys, numpy, torch; print(sys.version); print('numpy', numpy.__version__);
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if "$PY" -c "import pytest" 2>/dev/null; then
  # the repo's pytest config names plugins this machine may lack: override it
  "$PY" -m pytest tests/deep learners/deep --doctest-modules -q -rs -p no:cacheprovider -o addopts="" \
    -o timeout=0 > "$OUT/tests.txt" 2>&1 || status=1
else
  "$PY" - > "$OUT/tests.txt" 2>&1 <<'PYEOF' || status=1
# no pytest here: doctests of learners/deep, then one fine-tune round and swap on the device
import doctest, importlib, pkgutil, sys
import numpy as np, torch
import learners.deep as pkg
from learners.deep.device import resolve_device
from learners.deep.finetune import WindowedFineTuner, sample_fields
from learners.deep.model import CandidateRanker
from learners.deep.window import SlidingWindow
failed = 0
for info in pkgutil.iter_modules(pkg.__path__):
    result = doctest.testmod(importlib.import_module(f"learners.deep.{info.name}"))
    print(info.name, result)
    failed += result.failed
device = resolve_device("auto")
rng = np.random.default_rng(0)
window = SlidingWindow(4000, sample_fields(16, 6), device)
x = rng.normal(size=(4000, 16, 6)).astype(np.float32)
window.append(np.arange(4000), np.zeros(4000), features=x, label=x[:, :, 0].argmax(1), n_valid=np.full(4000, 16))
tuner = WindowedFineTuner(lambda: CandidateRanker(6, (32,)), window, background=True, every_events=1,
                          device=device, k=3, batch_size=128, lr=0.01)
tuner.tick(4000); tuner.wait()
r = tuner.rounds[-1]
print("device", device, "round", r)
ok = r.loss_after < r.loss_before and tuner.serving.version == 1 and next(tuner.serving.model.parameters()).device.type == device.type
print("smoke", "ok" if ok else "FAILED")
sys.exit(1 if failed or not ok else 0)
PYEOF
fi
tail -5 "$OUT/tests.txt"

"$PY" bench/finetune.py --device "$DEVICE" --json > "$OUT/finetune_$DEVICE.json" 2> "$OUT/finetune_$DEVICE.err" || status=1
cat "$OUT/finetune_$DEVICE.json"
if [ "$DEVICE" != cpu ]; then
  "$PY" bench/finetune.py --device cpu --threads 1 --json > "$OUT/finetune_cpu.json" 2> "$OUT/finetune_cpu.err" || status=1
  cat "$OUT/finetune_cpu.json"
fi
echo "gpu_check status=$status (details under $OUT)"
exit $status
