# Sourced by the gpu_check*.sh scripts: $OUT (the device tool's output folder; ./gpu_out
# elsewhere), the carried wheels in .whl/ installed into /tmp/site (pydantic and friends are
# missing on the device machine; see the device tool's README), src/ on PYTHONPATH, and
# the GPU's name in $OUT/gpu.txt.
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
