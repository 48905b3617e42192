#!/usr/bin/env bash
# A job longer than one device call (10 minutes), on one machine held across several calls. The
# first call starts the job in its own process session, so it outlives the call while the machine
# stays warm; each later call, made within the machine's idle limit (30 s), waits and brings back
# what the job has written so far. Run on the device machine from the repo root:
#
#   bash experiments/lease.sh start SECONDS -- COMMAND [ARGS...]   # call 1
#   bash experiments/lease.sh wait SECONDS                        # calls 2, 3, ...
#
# `start` copies the tree to /tmp/lease/repo (later calls copy the tree again, under a running job)
# and runs COMMAND there with OUT=/tmp/lease/out, the environment passed on. Each call then waits
# SECONDS, or until the job has ended, and packs /tmp/lease/out into $OUT/r.tgz (the device brings
# back at most 8 files). The job's output is in out/job.log and its exit status in out/exit.
# Session 9's experiments/gpu_session9.sh was the first use of the pattern.
set -u
L=/tmp/lease
case ${1:-} in
  start)
    [ "${3:-}" = "--" ] && [ $# -ge 4 ] || { echo "usage: $0 start SECONDS -- COMMAND..." >&2; exit 2; }
    wait_s=$2; shift 3
    rm -rf $L; mkdir -p $L/out; cp -r . $L/repo
    (cd $L/repo && OUT=$L/out setsid nohup bash -c '"$@" > "$OUT/job.log" 2>&1; echo $? > "$OUT/exit"' \
      job "$@" < /dev/null > /dev/null 2>&1 &)
    ;;
  wait)
    [ $# -eq 2 ] && [ -d $L/out ] || { echo "usage: $0 wait SECONDS (after start, on the same machine)" >&2; exit 2; }
    wait_s=$2
    ;;
  *) echo "usage: $0 start SECONDS -- COMMAND... | wait SECONDS" >&2; exit 2 ;;
esac
end=$((SECONDS + wait_s))
while [ $SECONDS -lt $end ] && [ ! -e $L/out/exit ]; do sleep 5; done
tar -czf "$OUT/r.tgz" -C $L/out .
echo "job: $(cat $L/out/exit 2>/dev/null || echo running)"; tail -5 $L/out/job.log
