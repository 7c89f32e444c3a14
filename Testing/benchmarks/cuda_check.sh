#!/bin/bash
# The CUDA paths for real, on a machine with a GPU: register (whole process, CUDA three times, then the
# CPU, and the two fields compared), track a cine on CUDA and on the CPU, the benchmark on CUDA, and the
# paper configuration trained from scratch for a few minutes. Prints one line per timed command and
# leaves every log, metrics.json and table under $RESULTS.
#
#   PYTHON=.venv/bin/python FSDIFFREG=.venv/bin/fsdiffreg ACDC=../shared/data/ACDC \
#   CINE=SCD0000101_4d.nii.gz LABELS=SCD0000101_frame19_gt.nii.gz REFERENCE=19 \
#   TRAIN_MINUTES=3 RESULTS=/tmp/cuda_check bash Testing/benchmarks/cuda_check.sh
set -u
FSDIFFREG=${FSDIFFREG:-fsdiffreg}
PYTHON=${PYTHON:-python3}  # the Python that has FSDiffReg (and SimpleITK) installed
DEVICE=${DEVICE:-cuda}  # cpu runs the same steps on a machine without a GPU (a check of this script)
RESULTS=${RESULTS:-/tmp/cuda_check}
WORK=$(mktemp -d)
SAMPLE=$(dirname "$0")/../../FSDiffRegLib/assets/sample
mkdir -p "$RESULTS"

timed() {  # timed NAME COMMAND...: its whole-process seconds, its output in $RESULTS/NAME.log
    local name=$1 start end
    shift
    start=$(date +%s.%N)
    "$@" > "$RESULTS/$name.log" 2>&1
    local rc=$?
    end=$(date +%s.%N)
    echo "$name rc=$rc seconds=$(python3 -c "print(round($end - $start, 2))")" | tee -a "$RESULTS/times.txt"
}

$FSDIFFREG devices | tee "$RESULTS/devices.json"
for i in 1 2 3; do
    timed "register_${DEVICE}_$i" $FSDIFFREG register "$SAMPLE/acdc091_ED.nii.gz" "$SAMPLE/acdc091_ES.nii.gz" \
        --out-dir "$WORK/register_${DEVICE}_$i" --device "$DEVICE"
done
timed register_cpu $FSDIFFREG register "$SAMPLE/acdc091_ED.nii.gz" "$SAMPLE/acdc091_ES.nii.gz" \
    --out-dir "$WORK/register_cpu" --device cpu
cp "$WORK/register_${DEVICE}_3/metrics.json" "$RESULTS/register_${DEVICE}_metrics.json"
cp "$WORK/register_cpu/metrics.json" "$RESULTS/register_cpu_metrics.json"
"$PYTHON" - "$WORK" "$DEVICE" <<'EOF' | tee "$RESULTS/register_compare.txt"
import sys
import numpy as np
import SimpleITK as sitk
a, b = (sitk.GetArrayFromImage(sitk.ReadImage(f"{sys.argv[1]}/register_{d}/displacement.nii.gz"))
        for d in (f"{sys.argv[2]}_3", "cpu"))
d = np.abs(a - b)
print(f"displacement {sys.argv[2]} vs cpu: max |diff| {d.max():.4f} mm, mean {d.mean():.5f} mm, max |u| {np.abs(b).max():.2f} mm")
EOF

for device in "$DEVICE" cpu; do
    timed "track_$device" $FSDIFFREG track "$CINE" --labels "$LABELS" --reference-frame "$REFERENCE" \
        --out-dir "$WORK/track_$device" --device $device
    cp "$WORK/track_$device/function.json" "$RESULTS/track_${device}_function.json"
    cp "$WORK/track_$device/metrics.json" "$RESULTS/track_${device}_metrics.json"
done

timed "benchmark_$DEVICE" $FSDIFFREG benchmark --data "$ACDC" --methods network,refine --device "$DEVICE" \
    --out "$RESULTS/benchmark_$DEVICE.md"
timed "train_paper_$DEVICE" $FSDIFFREG train --data "$ACDC" --out "$WORK/train" --config paper --device "$DEVICE" \
    --max-minutes "${TRAIN_MINUTES:-3}"
cp "$WORK/train/train.log" "$WORK/train/log.csv" "$RESULTS/"
rm -rf "$WORK"
