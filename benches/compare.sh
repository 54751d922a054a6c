#!/usr/bin/env bash
# Side-by-side speed of autoclass and transformers + PyTorch on the workloads of issue 7.
#
#   benches/compare.sh OUTDIR [ROUNDS]
#
# OUTDIR holds the checkpoints of benches/make_checkpoints.py. Each round runs autoclass, then
# the reference (A B A B ...); a round's ratio is autoclass / transformers, so >1 means autoclass
# is faster (W8: python start-up time / ours; W9: python peak RSS / ours, >1 = we use less).
# The table gives the median ratio over the rounds. Only compare ratios measured in one run.
#
# Environment: ITERS (timed iterations per run, default 5), WARMUP (default 1), THREADS (default:
# all cores, passed to both sides), WORKLOADS (default "W1 W2 W3 W4 W5 W6 W7 W8 W9"),
# BIN (default target/release/autoclass), PY (default /work/refvenv/bin/python), DTYPE (f32),
# HUGE_PAGES (default 1: autoclass gets --huge-pages except in W8).
set -euo pipefail

OUTDIR=${1:?usage: benches/compare.sh OUTDIR [ROUNDS]}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ITERS=${ITERS:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-$(nproc)}
WORKLOADS=${WORKLOADS:-"W1 W2 W3 W4 W5 W6 W7 W8 W9"}
BIN=${BIN:-$ROOT/target/release/autoclass}
PY=${PY:-/work/refvenv/bin/python}
DTYPE=${DTYPE:-f32}
REF="$ROOT/benches/reference.py"
STARTUP_TEXT="A short text to classify."

[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release -p autoclass-cli" >&2; exit 1; }
[ -d "$OUTDIR" ] || { echo "no $OUTDIR: run $PY benches/make_checkpoints.py $OUTDIR" >&2; exit 1; }

# The bench arguments of each throughput workload.
args_of() {
  case $1 in
    W1) echo "$OUTDIR/distilbert-base --task sequence-classification --batch 8 --seq-len 128" ;;
    W2) echo "$OUTDIR/bert-base --task sequence-classification --batch 8 --seq-len 128" ;;
    W3) echo "$OUTDIR/bert-base --task sequence-classification --batch 1 --seq-len 16" ;;
    W4) echo "$OUTDIR/bert-base --task sequence-classification --batch 32 --lengths random:8-128" ;;
    W5) echo "$OUTDIR/swin-tiny --task backbone --batch 4 --image-size 224" ;;
    W6) echo "$OUTDIR/vit-base --task image-classification --batch 4 --image-size 224" ;;
    W7) echo "$OUTDIR/wav2vec2-base --task audio-classification --batch 1 --audio-seconds 10" ;;
  esac
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
# METRIC=wall: batch / median wall time (the `throughput:` line). METRIC=cpu: batch / median
# process CPU time per forward pass, which other processes on a busy machine do not inflate;
# use it with THREADS=1.
throughput() {
  if [ "${METRIC:-wall}" = cpu ]; then
    awk '/^model:/ {for (i = 1; i <= NF; i++) if ($i == "batch:") b = $(i + 1)}
         /^forward cpu:/ {ms = $4} END {if (ms > 0) printf "%.4f\n", b / (ms / 1000)}'
  else
    tail -n 1 | awk '$1=="throughput:" {print $2}'
  fi
}
# Our extra flags per workload: W4 runs padding-free (transformers pads to the longest). The
# throughput workloads and W9 (W1's memory) run with --huge-pages, the setting for long runs,
# unless HUGE_PAGES=0; W8 (start-up) runs `autoclass run` as it is, huge pages off.
# transformers keeps its default: its own switch (THP_MEM_ALLOC_ENABLE=1) made W4 slower.
HUGE_PAGES=${HUGE_PAGES:-1}
huge() { [ "$HUGE_PAGES" = 1 ] && echo "--huge-pages"; true; }
extra_a() { case $1 in W4) echo "--padding-free" ;; esac; huge; }
now() { date +%s.%N; }

run_a() { # shellcheck disable=SC2046
  "$BIN" bench $(args_of "$1") $(extra_a "$1") --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" --dtype "$DTYPE" 2>/dev/null; }
# The reference runs in REF_DTYPE (default f32: the bf16 and int8 targets compare with
# transformers' f32).
run_b() { # shellcheck disable=SC2046
  "$PY" "$REF" $(args_of "$1") --iters "$ITERS" --warmup "$WARMUP" --threads "$THREADS" --dtype "${REF_DTYPE:-f32}" 2>/dev/null; }

printf '%-4s %-48s %14s %14s %8s\n' workload what autoclass transformers ratio
for w in $WORKLOADS; do
  a_vals=(); b_vals=(); ratios=()
  for ((r = 1; r <= ROUNDS; r++)); do
    case $w in
      W8) # whole process, start to first logits
        t0=$(now); "$BIN" run "$OUTDIR/distilbert-base" --task sequence-classification --text "$STARTUP_TEXT" >/dev/null 2>&1; t1=$(now)
        a=$(echo "$t1 - $t0" | bc -l)
        t0=$(now); RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$PY" "$ROOT/benches/startup_reference.py" "$OUTDIR/distilbert-base" "$STARTUP_TEXT" >/dev/null 2>&1; t1=$(now)
        b=$(echo "$t1 - $t0" | bc -l)
        ratio=$(echo "$b / $a" | bc -l); unit="s" ;;
      W9) # peak RSS of W1 (one timed iteration)
        a=$(/usr/bin/time -f %M "$BIN" bench $(args_of W1) $(huge) --iters 1 --warmup 0 --threads "$THREADS" 2>&1 >/dev/null | tail -n 1)
        b=$(/usr/bin/time -f %M "$PY" "$REF" $(args_of W1) --iters 1 --warmup 0 --threads "$THREADS" 2>&1 >/dev/null | tail -n 1)
        ratio=$(echo "$b / $a" | bc -l); unit="KiB" ;;
      *)
        a=$(run_a "$w" | throughput); b=$(run_b "$w" | throughput)
        if [ -z "$a" ] || [ -z "$b" ]; then echo "$w round $r failed (autoclass '$a', transformers '$b')" >&2; continue; fi
        ratio=$(echo "$a / $b" | bc -l); unit="items/s" ;;
    esac
    a_vals+=("$a"); b_vals+=("$b"); ratios+=("$ratio")
    printf '  %s round %d: autoclass %s, transformers %s %s, ratio %.3f\n' "$w" "$r" "$a" "$b" "$unit" "$ratio" >&2
  done
  case $w in W8) what="start-up, s (ratio: py/ours)";; W9) what="peak RSS of W1, KiB (ratio: py/ours)";;
    *) what="items/s: $(args_of "$w" | sed "s|$OUTDIR/||; s/--task //")";; esac
  printf '%-4s %-48s %14s %14s %8s\n' "$w" "${what:0:48}" \
    "$(printf '%s\n' "${a_vals[@]}" | median)" "$(printf '%s\n' "${b_vals[@]}" | median)" \
    "$(printf '%.3f' "$(printf '%s\n' "${ratios[@]}" | median)")"
done
