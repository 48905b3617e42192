#!/usr/bin/env bash
# The H200 call that located the column-split backward's illegal address and timed the variants
# (output: ../probe_run.txt). The variant files are the kernel at three revisions with their custom
# ops renamed, made here before the call (the device gets no .git):
#   for v in now:c7b6680 head:493edda rowmajor:f906c88; do git show ${v#*:}:glmlab/kernels/sparse_mla.py |
#     sed 's/glmlab::sparse_mla/probe::sparse_mla/g; s/torch.ops.glmlab.sparse_mla/torch.ops.probe.sparse_mla/g' \
#     > experiments/results/h200-kernels-sparse-mla-2/probe/v_${v%%:*}.py; done
# (v_now ran from the working tree that became c7b6680, before its default tiles changed.)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
P=experiments/results/h200-kernels-sparse-mla-2/probe
probe() { timeout 60 python $P/probe.py "$@" 2>&1 | grep -v "^  warn\|Warning" | tail -4; }
{
probe $P/v_now.py 32 32 8 1 1 --n 8192 32768
probe $P/v_head.py 32 32 8 1 1 --n 8192 --forward-only
probe $P/v_now.py 32 32 8 1 2 --n 8192
probe $P/v_now.py 64 32 8 1 2 --n 8192
probe $P/v_now.py 64 64 8 1 2 --n 8192
probe $P/v_rowmajor.py 64 64 8 1 2 --n 8192
S=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
echo "sanitizer: $S"
[ -n "$S" ] && timeout 90 $S --tool memcheck --print-limit 4 python $P/probe.py $P/v_now.py 64 32 8 1 2 --check-n 2 2>&1 | grep -v "^  warn" | head -60
} 2>&1 | tee $OUT/probe.txt
