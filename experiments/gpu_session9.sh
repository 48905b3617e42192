#!/usr/bin/env bash
# Session 9 on one nvidia-h200 machine, held across three calls: the first starts a driver in its
# own process session (it outlives the call while the machine stays warm) and each call waits, then
# packs what has finished into $OUT/r.tgz:
#   bash experiments/gpu_session9.sh start 560     # call 1: start the driver, wait 560 s, pack
#   bash experiments/gpu_session9.sh wait 580      # calls 2 and 3: wait (at most 580 s) and pack
# The driver, from a copy of the tree in /tmp/repo9 (later calls copy the tree again):
# 1. (beside the studies) the CUDA-only tests: session 8's empty-slot test of the grouped experts over recycled memory
#    and the other tests that skip without a GPU;
# 2. issue 13's three studies still at 200 steps, at the specs' 1,000 steps x 3 seeds, 66 cells:
#    mtp_depth (12 worker processes), moe_granularity and dsa_topk (5 each), every runner stopped
#    after LIMIT seconds (default 1,450) with its finished cells reported.
set -u
R=/tmp/results
pack() {
  (cd /tmp && find st -name result.json -o -name metrics.jsonl -o -name train.log -o -name runs.jsonl \
     -o -name "*.md" -o -name "*.csv" -o -name "results.json" -o -name invocations.jsonl 2>/dev/null \
     | tar -czf $R/cells.tgz -T - 2>/dev/null)
  tar -czf $OUT/r.tgz -C $R .
}
case ${1:-} in
  start)
    rm -rf $R /tmp/repo9 /tmp/st; mkdir -p $R; cp -r . /tmp/repo9
    setsid nohup bash /tmp/repo9/experiments/gpu_session9.sh drive > $R/driver.log 2>&1 < /dev/null &
    ;;
  drive)
    cd /tmp/repo9
    export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > $R/gpu.txt
    ( timeout -k 10 300 python3 -m pytest -q -rs -p no:cacheprovider tests/test_moe.py tests/test_train.py \
      tests/test_generate.py tests/test_kernels_indexer.py tests/test_kernels_sparse_mla.py \
      -k "cuda or gpu or fp8" > $R/tests-cuda.log 2>&1
      echo "pytest exit $? at $(date -u +%T)" >> $R/tests-cuda.log ) &
    ( while sleep 30; do echo "$(date -u +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used \
        --format=csv,noheader) $(cut -d' ' -f1-3 /proc/loadavg)"; done > $R/load.log 2>&1 ) & load=$!
    DEVICE=${DEVICE:-cuda} LIMIT=${LIMIT:-1450} WORK=/tmp/st OUT=$R \
      bash experiments/gpu_studies.sh mtp_depth moe_granularity dsa_topk > $R/studies.log 2>&1
    kill $load
    date -u +%T > $R/done
    exit 0
    ;;
  wait) ;;
  *) echo "usage: $0 start|wait SECONDS" >&2; exit 2 ;;
esac
end=$((SECONDS + ${2:-560}))
while [ $SECONDS -lt $end ] && [ ! -e $R/done ]; do sleep 10; done
pack
tail -3 $R/load.log $R/studies.log 2>/dev/null; ls $R; grep -h "^\[" $R/*.log 2>/dev/null | tail -8
