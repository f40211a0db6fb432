#!/usr/bin/env bash
# The whole test-time-compute matrix in the order the protocol needs, resumable (each step skips
# what is already in benchmarks/results/ttc): train families first (sampling settings, verifier
# scores, search step settings), then the defaults chosen from them, then the eval families.
# Run it in the background: nohup benchmarks/ttc_run_all.sh > ttc.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
M=(.venv/bin/python benchmarks/ttc_matrix.py)
TRAIN_TASKS=${TRAIN_TASKS:-8}
EVAL_TASKS=${EVAL_TASKS:-40}
SEARCH_TASKS=${SEARCH_TASKS:-8}

# 1. train families: the sampling settings the defaults are chosen from; the verifiers are
#    compared at the old default only (the judge costs more than generating: too slow to repeat)
"${M[@]}" --split train --tasks "$TRAIN_TASKS" --temperature 0.7 --min-p 0 --verifiers judge,program
"${M[@]}" --split train --tasks "$TRAIN_TASKS" --temperature 0.7 --min-p 0.1 --verifiers ""
"${M[@]}" --split train --tasks "$TRAIN_TASKS" --temperature 1.0 --min-p 0.1 --verifiers ""
"${M[@]}" --choose
# 2. eval families: the held-out matrix
"${M[@]}" --split eval --tasks "$EVAL_TASKS" --chosen-sampling --verifiers program,head
# 3. search controllers on the first SEARCH_TASKS tasks of each eval family, and the outcome
#    head fit on the train rows scoring the eval rows
"${M[@]}" --split eval --tasks "$SEARCH_TASKS" --chosen-sampling --controllers pf-8
.venv/bin/python benchmarks/train_verifier.py
"${M[@]}" --split eval --tasks "$SEARCH_TASKS" --chosen-sampling --controllers epf-8
"${M[@]}" --summarize --chosen-sampling
