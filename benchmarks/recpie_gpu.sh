#!/bin/bash
# RecPIE on one GPU at nyc_recpie's sizes, on a machine that has neither the data nor the model weights:
# the real recipe (warm-started backbone, format warm-up, PPO, refresh, val/test explanations) with an
# NF4 model of Gemma 3 270M's shape and random weights, then a bf16-mixed smoke run and the generation
# benchmark. Prints the PPO log lines and the speed/ scalars (seconds per PPO iteration, rollout tokens/s,
# refresh seconds, peak GPU memory); every log also lands in $OUT.
#
#   benchmarks/recpie_gpu.sh pack [DIR] [BACKBONE.ckpt]   # here, with ../shared/data and the converted
#                                                         # Gemma (~/.cache/recpie/models/gemma3-270m)
#   benchmarks/recpie_gpu.sh run [DIR]                    # there; DIR defaults to .devcarry
#
# pack writes DIR (~9 MB): the raw NYC files and Gemma's tokenizer (xz), its config, the backbone
# checkpoint. The GPU machine also needs bitsandbytes and omegaconf wheels in .whl/ when its image lacks
# them (run installs them). DRY=1 run: tiny sizes on the CPU, to check the script; BENCH=0: no benchmark;
# SMOKE=0: no bf16-mixed run; EXTRA="key=value ...": more overrides of the main run; BENCH_CONFIGS: the
# benchmark's configurations, ';'-separated (default "none --batches 64,128;nf4 --batches 128").
set -u
CMD=${1:-run}; C=$(realpath -m "${2:-.devcarry}"); REPO=$(pwd)
if [ "$CMD" = pack ]; then
  G=${RECPIE_CACHE:-$HOME/.cache/recpie}/models/gemma3-270m; D=${RECPIE_DATA_ROOT:-$REPO/../shared/data}
  mkdir -p $C/gemma_shape $C/data/foursquare_nyc_tsmc2014 $C/data/foursquare_nyc_tsmc2014_raw_rows
  cp $G/config.json $G/generation_config.json $G/tokenizer_config.json $C/gemma_shape/
  xz -T2 -c $G/tokenizer.json > $C/gemma_shape/tokenizer.json.xz
  for f in foursquare_nyc_tsmc2014/dataset_TSMC2014_NYC.txt foursquare_nyc_tsmc2014_raw_rows/poi_metadata_NYC.csv; do
    xz -T2 -c $D/$f > $C/data/$f.xz
  done
  cp "${3:?the seed-0 backbone checkpoint of nyc_baselines (results/nyc_baselines/tb/backbone_seed0/checkpoints/best-*.ckpt)}" $C/backbone_seed0.ckpt
  du -sh $C; exit 0
fi

OUT=${OUT:-/tmp/recpie_gpu_out}; mkdir -p "$OUT"; W=/tmp/recpie_gpu; mkdir -p $W
exec > >(tee -a "$OUT/all.log") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "${DRY:-0}" = 1 ]; then
  export PYTHONPATH=$REPO; PY=$REPO/.venv/bin/python
else
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  fi
  export PYTHONPATH=/tmp/site:$REPO; PY=python3
fi
date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; nproc
$PY -c "import torch, transformers, peft, lightning, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__, 'bnb', b.__version__)"

# data: the raw NYC files under a data root (the processed cache is built here); the model: Gemma 3 270M's
# config and tokenizer with random weights (the real ones do not travel)
for f in $(cd $C/data && find . -name '*.xz'); do mkdir -p $W/data/$(dirname $f); xz -dc $C/data/$f > $W/data/${f%.xz}; done
export RECPIE_DATA_ROOT=$W/data XDG_CACHE_HOME=$W/cache
M=$W/gemma_rand; mkdir -p $W/gemma_shape; cp $C/gemma_shape/*.json $W/gemma_shape/
xz -dc $C/gemma_shape/tokenizer.json.xz > $W/gemma_shape/tokenizer.json
$PY -c "from benchmarks.bench_generation import random_init_dir; random_init_dir('$W/gemma_shape', '$M')" || exit 1

TINY="explainer.max_new_tokens=8 recpie.sft_steps=2 recpie.sft_batch=2 recpie.ppo_iterations=1 recpie.rollout_prompts=4 recpie.refresh_budget=8 recpie.rec_steps_per_cycle=4 recpie.val_samples=8 recpie.test_samples=8 recpie.generation_batch=8"
if [ "${DRY:-0}" = 1 ]; then
  SIZES="explainer.quantization=none $TINY"; ACC="trainer.accelerator=cpu"
else  # nyc_recpie's rollouts, warm-up and recommender steps; fewer refreshed, val and test samples
  SIZES="explainer.quantization=nf4 recpie.ppo_iterations=3 recpie.refresh_budget=256 recpie.val_samples=128 recpie.test_samples=256 recpie.generation_batch=64"
  ACC="trainer.accelerator=gpu"
fi

scalars() {  # run name: the speed and training scalars of its TensorBoard logs
  $PY -c "
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import glob
for d in sorted(glob.glob('$W/$1/nyc_recpie/tensorboard/*/seed0')):
    ev = EventAccumulator(d).Reload()
    for tag in sorted(ev.Tags()['scalars']):
        if tag.split('/')[0] in ('speed', 'ppo', 'reward', 'sft', 'fusion', 'test'):
            print(d.split('/')[-2], tag, ' '.join(f'{e.value:.4g}' for e in ev.Scalars(tag)))
"
}

recpie_run() {  # name, overrides...
  local name=$1; shift
  /usr/bin/time -v $PY -m recpie run nyc_recpie run.output_dir=$W/$name run.resume=false "run.seeds=[0]" \
    recpie.backbone_checkpoint=$C/backbone_seed0.ckpt explainer.model=$M explainer.explanation_cache=$W/expl_$name \
    recpie.cycles=1 "$@" 2>&1 | tr "\r" "\n" > $OUT/$name.log
  echo "$name exit ${PIPESTATUS[0]}"
  grep -E "PPO [0-9]|explained in|Elapsed|Maximum resident|Error|error" $OUT/$name.log | tail -20
  cp $W/$name/nyc_recpie/results.md $OUT/$name.results.md 2>/dev/null
  scalars $name | tee $OUT/$name.scalars.txt
}

recpie_run main $SIZES $ACC ${EXTRA:-}
if [ "${DRY:-0}" != 1 ]; then
  [ "${SMOKE:-1}" = 1 ] && recpie_run bf16mixed explainer.quantization=nf4 $TINY trainer.accelerator=gpu trainer.precision=bf16-mixed
  IFS=';' read -ra CONFIGS <<< "${BENCH_CONFIGS:-none --batches 64,128;nf4 --batches 128}"
  [ "${BENCH:-1}" = 1 ] && for q in "${CONFIGS[@]}"; do
    $PY benchmarks/bench_generation.py --model $M --dtype bfloat16 --quantization $q --n 128 \
      --max-new-tokens 96 --no-naive 2>&1 | tr '\r' '\n' | grep -v -E "it/s\]|s/it\]" | tee -a $OUT/bench_generation.log
  done
fi
date
