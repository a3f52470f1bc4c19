#!/usr/bin/env bash
# From a finished training run to the shipped model folder, with every figure of its model card:
#   bash export/tools/release_default_model.sh [runs/tiny] [models/vlt-refshapes] [version]
# 1) choose raw or EMA weights on the run's own monitor set (generated, seed 777 — not val; raw when
#    the run kept no EMA);
# 2) choose the mask threshold on the same monitor set (tools/calibrate_threshold: the best mIoU on a grid
#    0.20-0.70; THRESHOLD=0.35 keeps the VLT protocol's) and export to ONNX with it (parity-checked);
# 3) evaluate on ../shared/refshapes/val and on a fresh set of
# our own generator (seed 2) and on its hard variant (8-10 objects, seed 3), the queries' spread on val
# (tools/query_stats) and the page's example phrases (tools/score_examples); 4) record them in
# model.json; 5) print the learning curve; 6) make the INT8 variant of the graphs that ship
# (export/quantize.py) into <out>-int8 (INT8_OUT overrides), scored on val against the float model,
# the paired difference recorded in its model.json (`quantization.accuracy`).
# The export writes only the split graphs the service loads; model.onnx, the whole network in one
# graph, comes from `python -m export.export_onnx --checkpoint <run>/checkpoint.pt --out DIR --graphs all`.
set -euo pipefail
run=${1:-runs/tiny}; out=${2:-models/vlt-refshapes}; version=${3:-1.0.0}
val=${VAL:-../shared/refshapes/val}
py=${PYTHON:-python3}

# a run trained with --ema 0 has no EMA weights: then there is nothing to choose
has_ema=$($py -c "import sys, torch; print(int(torch.load(sys.argv[1], map_location='cpu', weights_only=False).get('model_ema') is not None))" "$run/checkpoint.pt")
if [ "$has_ema" = 1 ]; then
  for w in ema no-ema; do
    $py -m export.evaluate --checkpoint "$run/checkpoint.pt" --$w --data "$run/monitor" --json "$run/monitor-$w.json" >/dev/null
  done
  pick=$($py - "$run" <<'PY'
import json, sys
run = sys.argv[1]
score = {w: json.load(open(f"{run}/monitor-{w}.json"))["overall"]["mIoU"] for w in ("ema", "no-ema")}
print(max(score, key=score.get))
PY
)
  echo "monitor mIoU: ema $($py -c "import json;print(round(json.load(open('$run/monitor-ema.json'))['overall']['mIoU'],2))"), raw $($py -c "import json;print(round(json.load(open('$run/monitor-no-ema.json'))['overall']['mIoU'],2))") -> exporting --$pick"
else
  pick=no-ema
  echo "the run kept no EMA weights (--ema 0) -> exporting --$pick"
fi

threshold_sweep=()  # recorded in model.json when the threshold was chosen here
if [ -n "${THRESHOLD:-}" ]; then
  threshold=$THRESHOLD
else
  $py -m export.tools.calibrate_threshold --checkpoint "$run/checkpoint.pt" --$pick --data "$run/monitor" \
    --json "$run/threshold-monitor.json"
  threshold=$($py -c "import json, sys; print(json.load(open(sys.argv[1]))['best'])" "$run/threshold-monitor.json")
  threshold_sweep=(--metrics "threshold_monitor=$run/threshold-monitor.json")
fi
echo "mask threshold $threshold"
$py -m export.export_onnx --checkpoint "$run/checkpoint.pt" --$pick --out "$out" --version "$version" --threshold "$threshold"
$py -m export.evaluate --model "$out" --data "$val" --json "$run/val.json"
[ -f "$run/refshapes-seed2/annotations.jsonl" ] || $py -m export.data.refshapes --out "$run/refshapes-seed2" --seed 2 --expressions 1000
$py -m export.evaluate --model "$out" --data "$run/refshapes-seed2" --json "$run/seed2.json"
[ -f "$run/refshapes-hard-seed3/annotations.jsonl" ] || $py -m export.data.refshapes --out "$run/refshapes-hard-seed3" --seed 3 --expressions 1000 --hard
$py -m export.evaluate --model "$out" --data "$run/refshapes-hard-seed3" --json "$run/hard-seed3.json"
# the queries' figures on val and the page's example phrases of model folder $1 (files suffixed $2)
queries_and_examples() {
  $py -m export.tools.query_stats --model "$1" --data "$val" --json "$run/queries-val$2.json"
  $py -m export.tools.score_examples --model "$1" --json "$run/page-examples$2.json"
}
queries_and_examples "$out" ""
$py - "$run" "$pick" <<'PY'
import json, sys
run, pick = sys.argv[1], sys.argv[2]
ckpt_args = __import__("torch").load(f"{run}/checkpoint.pt", map_location="cpu", weights_only=False)
info = {"data": "RefShapes v1, streamed from export/data/refshapes/ (seeded, endless)",
        "steps": ckpt_args["step"], "minutes": round(ckpt_args["elapsed"] / 60, 1), "weights": pick,
        "args": ckpt_args["args"], "log": "log.jsonl of the run; see the model card's learning curve"}
if ckpt_args.get("averaged_from"):  # a mean of branches (tools/average_checkpoints): name them
    info["averaged_from"] = ckpt_args["averaged_from"]
json.dump(info, open(f"{run}/training.json", "w"), indent=1)
PY
$py -m export.tools.record_metrics "$out" --metrics "val=$run/val.json" --metrics "refshapes_seed2=$run/seed2.json" \
  --metrics "refshapes_hard_seed3=$run/hard-seed3.json" \
  "${threshold_sweep[@]}" \
  --metrics "queries_val=$run/queries-val.json" --metrics "page_examples=$run/page-examples.json" \
  --training "$run/training.json"
$py -m export.tools.learning_curve "$run/log.jsonl"
int8=${INT8_OUT:-${out}-int8}
rm -rf "$int8"  # a previous release's variant: every file is made again from the new graphs
$py -m export.quantize --model "$out" --out "$int8" --data "$val" --data-name val
queries_and_examples "$int8" -int8
$py -m export.tools.record_metrics "$int8" --metrics "queries_val=$run/queries-val-int8.json" \
  --metrics "page_examples=$run/page-examples-int8.json"
