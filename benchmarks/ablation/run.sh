#!/usr/bin/env bash
# Reproduces benchmarks/ablation/ (see README.md). Run from the repository root; writes only
# under $SCRATCH (default /tmp/abl3) and, at the end, copies the report files here.
set -euo pipefail
SCRATCH=${SCRATCH:-/tmp/abl3}
PY=${PY:-.venv/bin/python}
TOKENS=${TOKENS:-2867200}   # the tiny preset's 700 steps of 16 x 256 tokens
POOL=${POOL:-4000}          # documents drawn from the built corpus (see README: scoring cost)
SEEDS=${SEEDS:-3}
OLD_MODEL=${OLD_MODEL:-tests/data/format2-model}   # the previous default (MiniLM + forest); "" skips it
S=$SCRATCH
mkdir -p "$S"
OPTS=(--preset tiny --top-fraction 0.3 --tokens "$TOKENS" --pass-samples 4 --pass-problems 40
      --max-new-tokens 64 --threads 1 -q)
# A folder that reuses another's prepared data: hard links (data files are never modified in
# place) plus its ablate.json, which makes the copied data this command's own.
prep() { mkdir -p "$2"; [ -d "$2/data" ] || cp -al "$1/data" "$2/data"; cp "$1/ablate.json" "$2/ablate.json"; }

# 1. The corpus: installed Python sources (stdlib + site-packages of this venv) + TheAlgorithms.
[ -d "$S/code" ] || $PY ../shared/tools/build_code_corpus.py --out "$S/code"
# 2. The pool: a uniform sample of $POOL documents with phifilter's own sampler.
[ -f "$S/pool/pool.parquet" ] || $PY -m phifilter sample "$S/code" ../shared/data/corpora/thealgorithms.parquet \
    -n "$POOL" --seed 0 -o "$S/pool/pool.parquet"
# 3. Score the pool with the bundled default and, for a same-pool comparison, the previous model.
$PY -m phifilter score "$S/pool" -o "$S/scored" -q
[ -z "$OLD_MODEL" ] || $PY -m phifilter score "$S/pool" -o "$S/scored_old" --model "$OLD_MODEL" --dtype bfloat16 -q
# 4. Seed 0's filtered+random process prepares the data (scan, decontaminate, BPE, token files)
#    first; once its runs start, one process per seed for filtered+random (random is sized by
#    filtered) and one for unfiltered run at once, each on its own copy: every run is one thread.
#    The previous model's seed 0 prepares its own data the same way, and its other seeds share it.
$PY -m phifilter ablate "$S/scored" -o "$S/fr0" --seed 0 --seeds 1 --arms filtered,random "${OPTS[@]}" &
if [ -n "$OLD_MODEL" ]; then
  $PY -m phifilter ablate "$S/scored_old" -o "$S/old0" --seed 0 --seeds 1 --arms filtered "${OPTS[@]}" &
  until [ -d "$S/old0/runs" ]; do sleep 10; done
fi
until [ -d "$S/fr0/runs" ]; do sleep 10; done
for s in $(seq 0 $((SEEDS - 1))); do
  if [ "$s" != 0 ]; then
    prep "$S/fr0" "$S/fr$s"
    $PY -m phifilter ablate "$S/scored" -o "$S/fr$s" --seed "$s" --seeds 1 --arms filtered,random "${OPTS[@]}" &
    if [ -n "$OLD_MODEL" ]; then
      prep "$S/old0" "$S/old$s"
      $PY -m phifilter ablate "$S/scored_old" -o "$S/old$s" --seed "$s" --seeds 1 --arms filtered "${OPTS[@]}" &
    fi
  fi
  prep "$S/fr0" "$S/un$s"
  $PY -m phifilter ablate "$S/scored" -o "$S/un$s" --seed "$s" --seeds 1 --arms unfiltered "${OPTS[@]}" &
done
wait
# 5. Merge: one folder with the shared data and every run; its rerun skips them all and writes
#    the report over the seeds. The previous model's filtered arm gets a report of its own.
mkdir -p "$S/bench/runs"; prep "$S/fr0" "$S/bench"
for s in $(seq 0 $((SEEDS - 1))); do cp -r "$S/fr$s/runs/"* "$S/un$s/runs/"* "$S/bench/runs/"; done
$PY -m phifilter ablate "$S/scored" -o "$S/bench" --seeds "$SEEDS" "${OPTS[@]}"
cp "$S/bench/"{report.md,report.html,results.json,loss_curves.png} benchmarks/ablation/
if [ -n "$OLD_MODEL" ]; then
  mkdir -p "$S/oldbench/runs"; prep "$S/old0" "$S/oldbench"
  for s in $(seq 0 $((SEEDS - 1))); do cp -r "$S/old$s/runs/"* "$S/oldbench/runs/"; done
  $PY -m phifilter ablate "$S/scored_old" -o "$S/oldbench" --seeds "$SEEDS" --arms filtered "${OPTS[@]}"
  cp "$S/oldbench/results.json" benchmarks/ablation/results-previous-model.json
fi
