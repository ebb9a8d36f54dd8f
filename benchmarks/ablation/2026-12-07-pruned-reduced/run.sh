#!/usr/bin/env bash
# A REDUCED pruned ablation (see README.md here): a 2-layer, 164k-parameter GPT, 100 steps,
# a 1,500-document pool, filtered and random only, 3 seeds, pruned at one threshold of the
# syntax similarity (0.2: a third of the filtered arm). Run from the repository root; writes under $SCRATCH, then copies the
# report files into this folder.
set -euo pipefail
SCRATCH=${SCRATCH:-/tmp/i22abl}
PY=${PY:-.venv/bin/python}
TAUS=${TAUS:-"0.2"}
HERE=benchmarks/ablation/2026-12-07-pruned-reduced
S=$SCRATCH
mkdir -p "$S"
PRUNE=(); for t in $TAUS; do PRUNE+=(--prune-similar "$t"); done
OPTS=(--preset tiny --set n_layer=2 --set d_model=64 --set n_head=2 --set context=128 --set vocab_size=1024
      --tokens "${TOKENS:-204800}" --top-fraction 0.3 --arms filtered,random --pass-samples 0 --threads 1
      --similarity-from "$S/audit_syntax" "${PRUNE[@]}" -q)
prep() { mkdir -p "$2"; [ -d "$2/data" ] || cp -al "$1/data" "$2/data"; cp "$1/ablate.json" "$2/ablate.json"; }

# 1. Corpus (installed Python sources + TheAlgorithms), a pool of 1,500 documents cut at 8,000 characters.
[ -d "$S/code" ] || $PY ../shared/tools/build_code_corpus.py --out "$S/code"
[ -f "$S/pool/pool.parquet" ] || $PY -m phifilter sample "$S/code" ../shared/data/corpora/thealgorithms.parquet \
    -n 1500 --max-chars 8000 --seed 0 -o "$S/pool/pool.parquet" -q
# 2. Score with the bundled default; audit the pool (syntax method only: see README).
[ -f "$S/scored/pool.parquet" ] || nice -n 10 $PY -m phifilter score "$S/pool" -o "$S/scored" -q --read-batch-rows 256
[ -f "$S/audit_syntax/contamination.parquet" ] || nice -n 10 $PY -m phifilter contamination "$S/pool" -o "$S/audit_syntax" --methods syntax -q \
    --stats-json "$S/audit_syntax_stats.json"
# 3. Seed 0 prepares the data; seeds 1 and 2 run on hard-linked copies once it has.
nice -n 10 $PY -m phifilter ablate "$S/scored" -o "$S/s0" --seed 0 --seeds 1 "${OPTS[@]}" &
until [ -d "$S/s0/runs" ]; do sleep 10; done
for s in 1 2; do
  prep "$S/s0" "$S/s$s"
  nice -n 10 $PY -m phifilter ablate "$S/scored" -o "$S/s$s" --seed "$s" --seeds 1 "${OPTS[@]}" &
done
wait
# 4. One folder with every run; its rerun skips them all and writes the report over 3 seeds.
mkdir -p "$S/bench/runs"; prep "$S/s0" "$S/bench"
for s in 0 1 2; do cp -r "$S/s$s/runs/"* "$S/bench/runs/"; done
$PY -m phifilter ablate "$S/scored" -o "$S/bench" --seeds 3 "${OPTS[@]}"
cp "$S/bench/"{report.md,report.html,results.json,loss_curves.png} "$HERE/"
