#!/usr/bin/env bash
# The #18 training run for a session that is lent a GPU (device tool): minutes there are days on
# this CPU. Two steps:
#
#   bash research/gpu_campaign.sh stage
#       Here. Copies the training split (runs/data's links point into ../shared, which does not
#       travel) to .device_carry/data, and adds up what the device call would send: the working
#       tree plus that folder must stay under 64 MiB (exit 1 when it does not).
#
#   device run, carry [".device_carry"], timeout_s 600:
#       bash research/gpu_campaign.sh train
#       There. x2, x3 and x4 train side by side on the one GPU, each from the shipped weights
#       (research/configs/unet_gpu.toml): L1 for $L1_MIN minutes, then an MSE finish of $MSE_MIN minutes
#       from its EMA, kept if it validates at least as well. $OUT receives
#       unet_x{2,3,4}_gpu.safetensors (float32 EMA weights; the L1 result as soon as it exists),
#       log_x{2,3,4}.jsonl (validation PSNR against training time, both phases) and train.log.
#       The budgets are training time (validation excluded); start-up, decoding, validation and
#       export add an estimated 1-1.5 minutes: 5.5 + 1.5 + 1.5 leaves a minute of the 10.
#
# Then, here: `python scripts/eval_sr.py FILE ...` on the files that came back (the benchmark
# protocol). A file replaces the shipped weights only if it does better on validation (its log) and
# then on the benchmark; it ships as float16:
#   upscale train export FILE -o src/upscale_cli/weights/unet_xN.safetensors --half
# and the model card says how it was made.
#
# Environment: OUT (required for train), DATA (.device_carry/data: its train/ and val/), RUNS (runs:
# where the run folders go), L1_MIN (5.5), MSE_MIN (1.5), DEVICE (cuda; cpu checks the script end to
# end, as tests/test_gpu_campaign.py does), THREADS (5 CPU threads a process), SCALES (2 3 4),
# BATCH (the recipe's 64), INIT_DIR (a folder of an earlier GPU run's unet_x{2,3,4}_gpu.safetensors
# to go on from, e.g. the files an earlier call returned; default: the shipped weights).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
DATA=${DATA:-.device_carry/data}
RUNS=${RUNS:-runs}
LIMIT=$((64 * 1024 * 1024))

stage() {
    python3 scripts/make_train_split.py --copy --out "$DATA" || return 1
    python3 - "$DATA" "$LIMIT" <<'EOF'
import os, subprocess, sys
data, limit = sys.argv[1], int(sys.argv[2])
def listed(*args):
    out = subprocess.run(["git", "ls-files", "-z", *args], capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(p) and not os.path.islink(p)]
tree = {p: os.path.getsize(p) for p in listed() + listed("--others", "--exclude-standard")}
carried = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
total = sum(tree.values()) + carried
mib = lambda n: f"{n / 2**20:.1f} MiB"
print(f"working tree {mib(sum(tree.values()))} + {data} {mib(carried)} = {mib(total)} (limit {mib(limit)})")
if total <= limit:
    print('fits: device run, command "bash research/gpu_campaign.sh train", carry [".device_carry"], timeout_s 600')
    sys.exit(0)
print(f"too large by {mib(total - limit)}: the device call carries at most {mib(limit)}")
sys.exit(1)
EOF
}

train() {
    : "${OUT:?set OUT to the folder that receives the results}"
    local l1=${L1_MIN:-5.5} mse=${MSE_MIN:-1.5} device=${DEVICE:-cuda} threads=${THREADS:-5}
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    mkdir -p "$RUNS" "$OUT"
    { date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
      python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/train.log"
    local pids=() s
    for s in ${SCALES:-2 3 4}; do
        one_scale "$s" "$l1" "$mse" "$device" "$threads" > "$RUNS/gpu_x$s.log" 2>&1 &
        pids+=($!)
    done
    local rc=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    local steps=" step [0-9]+ \([0-9.]+%\) loss"  # the progress lines: every 10 steps, with it/s
    for s in ${SCALES:-2 3 4}; do
        { echo "== x$s"; grep -v -E "$steps" "$RUNS/gpu_x$s.log"
          echo "-- every 50th progress line"; grep -E "$steps" "$RUNS/gpu_x$s.log" | awk 'NR % 50 == 0'; } >> "$OUT/train.log"
    done
    date -u >> "$OUT/train.log"
    return $rc
}

one_scale() {  # scale, L1 minutes, MSE minutes, device, threads
    # The L1 result goes to $OUT as soon as it exists (a call stopped at its limit still returns
    # it); the MSE finish replaces it only if its last validation PSNR is at least the L1's.
    local s=$1 run=$RUNS/gpu_x$1 result=$OUT/unet_x$1_gpu.safetensors crop
    crop=$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['crop'])" \
        "research/configs/unet_x${s}_campaign.toml") || return 1  # the campaign's LR crop of this scale
    rm -rf "$run"
    local common=(--config research/configs/unet_gpu.toml "$DATA/train" --val "$DATA/val" -x "$s" --crop "$crop"
                  --device "$4" --threads "$5" --plain ${BATCH:+--batch "$BATCH"})
    local init=src/upscale_cli/weights/unet_x$s.safetensors
    [ -n "${INIT_DIR:-}" ] && init=$INIT_DIR/unet_x${s}_gpu.safetensors
    python3 -m upscale_cli train "${common[@]}" --init "$init" --minutes "$2" --out "$run/l1" &&
    python3 -m upscale_cli train export "$run/l1" -o "$result" &&
    keep_better "$run" "$OUT/log_x$s.jsonl" "$result" &&
    python3 -m upscale_cli train "${common[@]}" --init "$result" --loss mse --lr 0.0001 --minutes "$3" \
        --out "$run/mse" &&
    python3 -m upscale_cli train export "$run/mse" -o "$run/mse.safetensors" &&
    keep_better "$run" "$OUT/log_x$s.jsonl" "$result"
}

keep_better() {  # run folder, log to write, result file: merge the phases' logs; keep the better phase
    python3 - "$@" <<'EOF'
import json, os, shutil, sys
run, log, result = sys.argv[1:]
last = {}
with open(log + ".part", "w") as sink:
    for phase in ("l1", "mse"):
        if not os.path.exists(f"{run}/{phase}/log.jsonl"):
            continue
        for line in open(f"{run}/{phase}/log.jsonl"):
            row = {"phase": phase, **json.loads(line)}
            last[phase] = row["val_psnr"]
            sink.write(json.dumps(row) + "\n")
os.replace(log + ".part", log)
if "mse" in last:
    better = last["mse"] >= last["l1"]
    print(f"MSE finish {last['mse']:.4f} dB vs L1 {last['l1']:.4f} dB: keeping {'MSE' if better else 'L1'}")
    if better:
        shutil.copyfile(f"{run}/mse.safetensors", result + ".part")
        os.replace(result + ".part", result)
EOF
}

case "${1:-}" in
    stage) stage ;;
    train) train ;;
    *) echo "usage: bash research/gpu_campaign.sh stage|train (read the header)" >&2; exit 2 ;;
esac
