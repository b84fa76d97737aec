#!/usr/bin/env bash
# The GPU path, end to end, on a CUDA machine: the update-cost table with autocast off /
# bf16 / fp16 and torch.compile, then four short CartPole trainings on the GPU (one per
# switch, run side by side after the timings), each scored by evaluate.py on the GPU.
# Usage: bash benchmarks/gpu_check.sh [out_dir] [train_steps]
set -u
out=${1:-gpu_check}
steps=${2:-10000}
mkdir -p "$out"
py=${PYTHON:-python3}
run_name() { echo "$1" | tr ' =.' '__-'; }  # "trainer.amp=off" -> trainer-amp_off
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
switches=("trainer.amp=off" "trainer.amp=bf16" "trainer.amp=fp16"
          "trainer.amp=bf16 trainer.compile=true")
for flags in "--amp off" "--amp bf16" "--amp fp16" "--amp bf16 --compile"; do
  # shellcheck disable=SC2086
  $py -W ignore::UserWarning benchmarks/update_speed.py --device cuda $flags | tail -n 12
done
for sw in "${switches[@]}"; do
  name=$(run_name "$sw")
  # shellcheck disable=SC2086
  ( start=$(date +%s)
    $py train.py env=cartpole trainer.device=cuda $sw trainer.total_steps="$steps" \
        trainer.progress=false seed=0 trainer.run_dir="$out/$name" >"$out/$name.log" 2>&1
    echo "rc=$? $(( $(date +%s) - start ))s" >>"$out/$name.log" ) &
done
wait
for sw in "${switches[@]}"; do
  name=$(run_name "$sw")
  echo "train [$sw]: $(grep -E "final eval|rror|^rc=" "$out/$name.log" | tr '\n' ' ')"
  $py evaluate.py checkpoint="$out/$name" device=cuda episodes=10 2>&1 | tail -n 2 | head -n 1
done
