#!/usr/bin/env bash
# The ablation table of docs/RESULTS.md (issue 18): every row of the paper's ablation (METHOD,
# "Reference figures"), each variant of G trained with the same budget and seed against the same
# F, every FD from `biflow eval` on the same N class-conditional samples from the same noise
# (clamped 8-bit images, as users get them), each row's training curve drawn by `biflow plot`.
#
# Resumable: a variant whose run folder holds a finished run (the marker `ablation_done`,
# written atomically after the trainer exited 0 and its checkpoint records the full step count)
# is skipped; one that was interrupted (a resume state in the folder) is continued with
# --resume; one killed before its first checkpoint is restarted (--overwrite). Evaluations are
# cached too (one JSON file each under OUT/evals), so a re-run redoes only what is missing.
# Stopping the script (Ctrl-C, SIGTERM) stops the trainer, which saves a checkpoint first.
#
#   tools/ablation.sh                                # everything, 3200 steps of 64 per G
#   tools/ablation.sh --dry-run                      # the commands, nothing run
#   tools/ablation.sh --only naive,distill,align     # a subset (rows that need only those)
#   tools/ablation.sh --second-seed 1                # also seed 1 for the contested rows
#   tools/ablation.sh --steps 20 --flow-steps 20 --eval-n 500 --out /tmp/abl --docs /tmp/abl/docs
#
# The recipe of every G is that of the shipped G's first phase (models/README.md): hidden
# alignment, per-image norm control with adaptive weighting (p = 1, eps = 0.01), learned
# denoising (2 layers), training-time guidance (1 + w log-uniform on [1, 5], label drop 0.1),
# the perceptual distance (weight 1) on models/perceptual-fmnist.safetensors, no class term,
# AdamW lr 1e-3 (0.9/0.95), 200 warmup steps, cosine to 1e-5, EMA 0.999, batch 64. Each
# variant changes one thing (see `variant_opts` and the table's "changes" column).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: tools/ablation.sh [options]

  --steps N          training steps of every G (default 3200; batch 64)
  --batch N          images per step (default 64)
  --flow-steps N     training steps of each F of the norm-control pair (default: --steps;
                     raised later, the F's are extended and normon/normoff must be retrained)
  --seed N           training seed of every variant (default 0)
  --second-seed N    also train the contested variants with seed N (folders NAME-sN): the
                     table then has both FDs and their spread (default: none)
  --only LIST        comma-separated variants to train and evaluate: exact, align, naive,
                     distill, nodenoise, mse, cfgoff, normon, normoff (normon/normoff train
                     their F, flowclip/flownoclip, first); default all
  --eval-n N         samples per FD (default 10000)
  --eval-seed N      noise seed of every evaluation (default 1: the same z for every row)
  --fidelity-n N     test images for G(F(x)) PSNR in the unguided rows (default 2000; 0 = skip)
  --ws "LIST"        guidance grid of the guided rows (default "0 0.5 1 1.5 2 2.5 3")
  --grid-all         also search the grid for every G row (default: w = 0 there, as the paper)
  --flow PATH        the fixed forward model (default models/flow-fmnist.safetensors)
  --features PATH    G's perceptual network (default models/perceptual-fmnist.safetensors)
  --flow-bound C     bound of the clipped F of the norm-control pair (default 4, fmnist-small's)
  --ckpt-every N     trainers' checkpoint interval (default 200)
  --eval-every N     G(F(x)) on 1000 test images in the training curves every N steps (default 500)
  --g-opts "OPTS"    extra train-reverse options for every G (default none)
  --out DIR          run folders, evaluations, table (default runs/ablation18)
  --docs DIR         the training curves, one PNG per comparison (default docs/ablation)
  --bin PATH         the biflow binary (default ./biflow)
  --precision P      fp32 or bf16: the matrix products of every training run and evaluation
                     (default fp32, the precision the table's runs were trained in; the CLI's
                     own default for a new training run is bf16, so it is passed explicitly)
  --second-precision P  the precision of the second seed's training runs (default: --precision);
                     evaluations stay at --precision. bf16 halves a run's time; the table
                     then says so, and its spread holds seed and precision together
  --dry-run          print the commands instead of running them
  --help             this text
EOF
}

STEPS=3200; BATCH=64; FLOW_STEPS=; SEED=0; SEED2=; ONLY=; EVAL_N=10000; EVAL_SEED=1
FID_N=2000; WS="0 0.5 1 1.5 2 2.5 3"; GRID_ALL=0; FLOW=models/flow-fmnist.safetensors
FEATURES=models/perceptual-fmnist.safetensors; FLOW_BOUND=4; CKPT_EVERY=200; EVAL_EVERY=500
G_OPTS=; OUT=runs/ablation18; DOCS=docs/ablation; BIN=./biflow; DRY=0; MARK_EXTRA=; PREC=fp32; PREC2=
need() { [ $# -ge 2 ] || { echo "tools/ablation.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case $1 in
        --steps) need "$@"; STEPS=$2; shift ;;
        --batch) need "$@"; BATCH=$2; shift ;;
        --flow-steps) need "$@"; FLOW_STEPS=$2; shift ;;
        --seed) need "$@"; SEED=$2; shift ;;
        --second-seed) need "$@"; SEED2=$2; shift ;;
        --only) need "$@"; ONLY=$2; shift ;;
        --eval-n) need "$@"; EVAL_N=$2; shift ;;
        --eval-seed) need "$@"; EVAL_SEED=$2; shift ;;
        --fidelity-n) need "$@"; FID_N=$2; shift ;;
        --ws) need "$@"; WS=$2; shift ;;
        --grid-all) GRID_ALL=1 ;;
        --flow) need "$@"; FLOW=$2; shift ;;
        --features) need "$@"; FEATURES=$2; shift ;;
        --flow-bound) need "$@"; FLOW_BOUND=$2; shift ;;
        --ckpt-every) need "$@"; CKPT_EVERY=$2; shift ;;
        --eval-every) need "$@"; EVAL_EVERY=$2; shift ;;
        --g-opts) need "$@"; G_OPTS=$2; shift ;;
        --out) need "$@"; OUT=$2; shift ;;
        --docs) need "$@"; DOCS=$2; shift ;;
        --bin) need "$@"; BIN=$2; shift ;;
        --precision) need "$@"; PREC=$2; shift ;;
        --second-precision) need "$@"; PREC2=$2; shift ;;
        --dry-run) DRY=1 ;;
        --help|-h) usage; exit 0 ;;
        *) echo "tools/ablation.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
FLOW_STEPS=${FLOW_STEPS:-$STEPS}
for v in "$STEPS" "$BATCH" "$FLOW_STEPS" "$SEED" "$EVAL_N" "$EVAL_SEED" "$FID_N" "$CKPT_EVERY" "$EVAL_EVERY" ${SEED2:+"$SEED2"}; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "tools/ablation.sh: '$v' is not a count (see --help)" >&2; exit 2; }
done
PREC2=${PREC2:-$PREC}
for p in "$PREC" "$PREC2"; do
    case $p in fp32|bf16) ;; *) echo "tools/ablation.sh: a precision must be fp32 or bf16, not '$p'" >&2; exit 2 ;; esac
done
[ "$DRY" = 1 ] || [ -x "$BIN" ] || { echo "tools/ablation.sh: $BIN is not built (make)" >&2; exit 1; }

# ------------------------------------------------------------------ the variants
ALL_G="align naive distill nodenoise mse cfgoff normon normoff"
CONTESTED="align naive distill nodenoise cfgoff normon normoff"   # disagreed with the paper at 800 steps
variant_opts() {   # what the variant changes in the recipe (train-reverse options)
    case $1 in
        align|normon) ;;
        naive) echo "--inverse naive" ;;
        distill) echo "--inverse distill" ;;
        nodenoise) echo "--denoise none" ;;
        mse) echo "--perceptual 0" ;;
        cfgoff) echo "--cfg-train off" ;;
        normoff) echo "--norm-control off" ;;
        *) echo "tools/ablation.sh: unknown variant $1" >&2; exit 2 ;;
    esac
}
variant_flow() {   # the F a variant is trained against
    case $1 in
        normon) echo "$OUT/flowclip" ;;
        normoff) echo "$OUT/flownoclip" ;;
        *) echo "$FLOW" ;;
    esac
}
flow_opts() {   # the two F's of the norm-control pair: the shipped F's recipe, one bound apart
    echo "--config fmnist-small --noise gauss --sigma 0.05 --warmup 200 --eval-every 500" \
         "--bound $([ "$1" = flowclip ] && echo "$FLOW_BOUND" || echo 0)"
}
selected() {   # selected NAME: is it in --only (or no --only)?
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}
for v in ${ONLY//,/ }; do
    case " exact $ALL_G " in *" $v "*) ;; *) echo "tools/ablation.sh: --only: unknown variant '$v' (see --help)" >&2; exit 2 ;; esac
done

# ------------------------------------------------------------------ running commands
CHILD=
on_signal() {
    echo "tools/ablation.sh: interrupted; stopping the running command (it saves a checkpoint)" >&2
    if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null || true; wait "$CHILD" 2>/dev/null || true; fi
    exit 130
}
trap on_signal INT TERM
run() {   # run CMD...: printed; in the background so that a signal reaches the script at once
    echo "+ $*"
    [ "$DRY" = 1 ] && return 0
    "$@" & CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=
    return $rc
}
run_logged() {   # run_logged LOG CMD...: as run, the output kept in LOG (and shown after)
    local log=$1; shift
    echo "+ $*"
    [ "$DRY" = 1 ] && return 0
    "$@" > "$log" 2>&1 & CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=
    sed 's/^/   /' "$log"
    return $rc
}
run_tee() {   # run_tee LOG CMD...: as run, the output also appended to LOG
    local log=$1; shift
    echo "+ $*"
    [ "$DRY" = 1 ] && return 0
    mkdir -p "${log%/*}"
    echo "+ $*" >> "$log"
    "$@" > >(tee -a "$log") 2>&1 & CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=
    return $rc
}
atomic_write() {   # atomic_write FILE TEXT
    printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}
ckpt_meta() {   # ckpt_meta FILE KEY PATTERN: a value of a checkpoint's metadata (empty when absent)
    { head -c 262144 "$1" 2>/dev/null | grep -ao "\"$2\":\"$3\"" | head -1 | sed 's/.*:"\(.*\)"/\1/'; } || true
}
ckpt_step() {   # the step recorded in a checkpoint's metadata (0 when absent)
    local s
    s=$(ckpt_meta "$1" step '[0-9]*')
    echo "${s:-0}"
}
ckpt_precision() {   # the precision recorded in a checkpoint's metadata (fp32 when absent: older runs)
    local p
    p=$(ckpt_meta "$1" precision '[a-z0-9]*')
    echo "${p:-fp32}"
}
jget() {   # jget FILE KEY: a number from a one-line JSON record
    sed -n "s/.*\"$2\":\([-0-9.eE+naifNAIF]*\).*/\1/p" "$1" | head -1
}
[ "$DRY" = 1 ] || mkdir -p "$OUT" "$DOCS"
FAILED=()
START=$(date +%s)

# train_run FOLDER STEPS PRECISION STATE CKPT TRAINER-COMMAND...: a run folder trained to STEPS
# in PRECISION, resumably (STATE: the trainer's resume file; CKPT: the checkpoint whose metadata
# records the step and the precision)
train_run() {
    local dir=$1 steps=$2 prec=$3 state=$4 ckpt=$5 had=; shift 5
    local name=${dir##*/}
    if [ -f "$dir/ablation_done" ]; then
        had=$(sed -n 's/^steps=//p' "$dir/ablation_done")
        if [ "${had:-0}" -ge "$steps" ]; then echo "== $name: finished ($had steps), skipped"; return 0; fi
        echo "== $name: finished at $had steps; extending to $steps (--resume)"
        [ "$DRY" = 1 ] || rm -f "$dir/ablation_done"
    fi
    local mode=()
    if [ -f "$dir/$state" ]; then
        local was
        was=$(ckpt_precision "$dir/$ckpt")
        if [ "$was" != "$prec" ]; then   # a run is trained in one precision throughout
            echo "== $name: its checkpoint was trained in $was, not $prec: move $dir away to train" \
                 "it again in $prec" >&2
            FAILED+=("$name"); return 1
        fi
        mode=(--resume)
        [ -n "${had:-}" ] || echo "== $name: interrupted at step $(ckpt_step "$dir/$ckpt"); resuming"
    elif [ -d "$dir" ]; then
        mode=(--overwrite); echo "== $name: killed before its first checkpoint; restarting"
    else
        echo "== $name: training ($steps steps)"
    fi
    local t0
    t0=$(date +%s)
    if ! run_tee "$OUT/logs/$name.log" "$@" --precision "$prec" --out "$dir" --steps "$steps" "${mode[@]}"; then
        echo "== $name: the trainer failed (see above); the other variants go on" >&2
        FAILED+=("$name"); return 1
    fi
    [ "$DRY" = 1 ] && return 0
    local got
    got=$(ckpt_step "$dir/$ckpt")
    if [ "$got" -lt "$steps" ]; then   # the trainer was stopped by a signal of its own
        echo "== $name: stopped at step $got of $steps (not finished)" >&2
        FAILED+=("$name"); return 1
    fi
    local secs=$(( $(date +%s) - t0 ))
    [ "${mode[0]:-}" = --resume ] && secs="$secs (this part)"
    atomic_write "$dir/ablation_done" "steps=$got${MARK_EXTRA:+
$MARK_EXTRA}
precision=$prec
seconds=$secs
load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
finished=$(date -u +%FT%TZ)"
    echo "== $name: finished ($got steps)"
}

train_flow() {   # train_flow flowclip|flownoclip: at --precision, whichever seed's G asks for it
    # shellcheck disable=SC2046
    train_run "$OUT/$1" "$FLOW_STEPS" "$PREC" train_state.safetensors flow_ema.safetensors \
        "$BIN" train-flow $(flow_opts "$1") --seed "$SEED" --batch "$BATCH" \
        --ckpt-every "$CKPT_EVERY" --log-every 50 --eval-n "$EVAL_N"
}

train_g() {   # train_g VARIANT SEED FOLDER PRECISION
    local v=$1 seed=$2 dir=$3 prec=$4 flow
    flow=$(variant_flow "$v")
    MARK_EXTRA=
    case $v in normon|normoff)   # its own F first; a G of an F since extended is stale
        train_flow "${flow##*/}" || return 1
        [ "$DRY" = 1 ] && MARK_EXTRA="flow_step=$FLOW_STEPS" || MARK_EXTRA="flow_step=$(ckpt_step "$flow/flow_ema.safetensors")"
        local had
        had=$(sed -n 's/^flow_step=//p' "$dir/ablation_done" 2>/dev/null || true)
        if [ -n "$had" ] && [ "flow_step=$had" != "$MARK_EXTRA" ]; then
            echo "== ${dir##*/}: trained against its F at step $had, which is now at ${MARK_EXTRA#*=}:" \
                 "delete $dir to train it again" >&2
            FAILED+=("${dir##*/}"); return 1
        fi ;;
    esac
    # shellcheck disable=SC2046,SC2086
    train_run "$dir" "$STEPS" "$prec" reverse_state.safetensors reverse_ema.safetensors \
        "$BIN" train-reverse --flow "$flow" --features "$FEATURES" --seed "$seed" \
        --batch "$BATCH" --warmup 200 --ckpt-every "$CKPT_EVERY" --eval-every "$EVAL_EVERY" \
        --eval-n 0 --log-every 50 $(variant_opts "$v") $G_OPTS
    local rc=$?
    MARK_EXTRA=
    return $rc
}

# ------------------------------------------------------------------ evaluations
EVALS="$OUT/evals/n$EVAL_N-seed$EVAL_SEED"
[ "$DRY" = 1 ] || mkdir -p "$EVALS"
# evaluate KEY [eval options...]: one `biflow eval`, cached in EVALS/KEY.json (+ .log)
evaluate() {
    local key=$1; shift
    if [ -f "$EVALS/$key.json" ]; then echo "== eval $key: done, skipped"; return 0; fi
    rm -f "$EVALS/$key.tmp" "$EVALS/$key.log"
    if ! run_logged "$EVALS/$key.log" "$BIN" eval --n "$EVAL_N" --seed "$EVAL_SEED" --row "$key" \
            --precision "$PREC" --json "$EVALS/$key.tmp" "$@"; then
        echo "== eval $key failed (see $EVALS/$key.log)" >&2; FAILED+=("eval:$key"); return 1
    fi
    [ "$DRY" = 1 ] && return 0
    local psnr
    psnr=$(awk '/^G\(F\(x\)\) vs x/ {print $7}' "$EVALS/$key.log")
    if [ -n "$psnr" ]; then sed -i "s/}\$/,\"psnr\":$psnr}/" "$EVALS/$key.tmp"; fi
    mv -f "$EVALS/$key.tmp" "$EVALS/$key.json"
}
# best_w KEY [eval options...]: the grid of w (the table picks the lowest FD from the cache)
best_w() {
    local key=$1 w; shift
    for w in $WS; do evaluate "$key.w$w" --cfg "$w" --fidelity-n 0 "$@" || true; done
}
g_done() { [ "$DRY" = 1 ] || [ -f "$1/ablation_done" ]; }
g_key() {   # the evaluation key of a finished run: folder, steps, and a checksum of its marker
    local m="$1/ablation_done"   # (a run trained again gets new evaluations)
    if [ -f "$m" ]; then echo "${1##*/}-$(sed -n 's/^steps=//p' "$m")st-$(cksum < "$m" | cut -d' ' -f1)"
    else echo "${1##*/}-${STEPS}st"; fi
}

eval_g() {   # eval_g VARIANT FOLDER: the rows a G variant feeds
    local v=$1 dir=$2 k
    g_done "$dir" || return 0
    k=$(g_key "$dir")
    case $v in
        nodenoise)
            evaluate "$k.none" --reverse "$dir" --denoise none --fidelity-n 0
            evaluate "$k.score" --reverse "$dir" --denoise score --fidelity-n 0 ;;
        cfgoff)   # its w = 0 is the first point of the grid
            best_w "$k.2nfe" --reverse "$dir" --cfg-two-pass ;;
        *)
            evaluate "$k.w0" --reverse "$dir" --fidelity-n "$FID_N"
            if [ "$v" = align ] || [ "$GRID_ALL" = 1 ]; then best_w "$k" --reverse "$dir"; fi ;;
    esac
}

# ------------------------------------------------------------------ the runs
echo "== ablation: G $STEPS steps of $BATCH, F pair $FLOW_STEPS steps, seed $SEED${SEED2:+ (+ $SEED2 for: $CONTESTED)}," \
     "FD on $EVAL_N samples (noise seed $EVAL_SEED), w grid: $WS; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for v in $ALL_G; do
    selected "$v" || continue
    train_g "$v" "$SEED" "$OUT/$v" "$PREC" || true
done
if [ -n "$SEED2" ]; then
    for v in $CONTESTED; do
        selected "$v" || continue
        train_g "$v" "$SEED2" "$OUT/$v-s$SEED2" "$PREC2" || true
    done
fi

if selected exact; then   # no training: the exact inverse of the shipped F with score denoising
    evaluate exact.w0 --flow "$FLOW" --sampler exact --denoise score || true
    best_w exact --flow "$FLOW" --sampler exact --denoise score || true
fi
for v in $ALL_G; do
    selected "$v" || continue
    eval_g "$v" "$OUT/$v" || true
    if [ -n "$SEED2" ] && [[ " $CONTESTED " == *" $v "* ]]; then eval_g "$v" "$OUT/$v-s$SEED2" || true; fi
done
for fl in flowclip flownoclip; do   # the exact inverse of each F of the pair, for context
    if { selected normon || selected normoff; } && g_done "$OUT/$fl"; then
        evaluate "exact-$(g_key "$OUT/$fl").w0" --flow "$OUT/$fl" --sampler exact --denoise score || true
    fi
done
if [ ! -f "$EVALS/floor.json" ] && [ "$DRY" = 0 ]; then   # the FD of real training images
    evaluate floor --flow "$FLOW" --n 2 --floor-n "$EVAL_N" >/dev/null || true
fi

# ------------------------------------------------------------------ curves
plot_group() {   # plot_group NAME KEYS FOLDER...: one PNG with the logs of the finished folders
    local name=$1 keys=$2; shift 2
    local dirs=() d
    for d in "$@"; do if [ -f "$d/log.jsonl" ]; then dirs+=("$d"); fi; done
    [ ${#dirs[@]} -gt 0 ] || return 0
    run "$BIN" plot "${dirs[@]}" --keys "$keys" --cols 2 --out "$DOCS/$name.png" || FAILED+=("plot:$name")
}
with_seed2() { local v; for v in "$@"; do echo "$OUT/$v"; [ -z "$SEED2" ] || echo "$OUT/$v-s$SEED2"; done; }
GK=rec,align,perceptual,eval_psnr
# shellcheck disable=SC2046
{
    plot_group inverse "$GK" $(with_seed2 naive distill align)
    plot_group denoise "$GK" $(with_seed2 align nodenoise)
    plot_group norm "$GK" $(with_seed2 normon normoff)
    plot_group norm-flows loss,eval_bpd_ema "$OUT/flowclip" "$OUT/flownoclip"
    plot_group perceptual "$GK" "$OUT/mse" $(with_seed2 align)
    plot_group guidance "$GK" $(with_seed2 align cfgoff)
}

# ------------------------------------------------------------------ the table
[ "$DRY" = 1 ] && { echo "== dry run: nothing was run"; exit 0; }
cell() {   # cell KEY: "FD | accuracy | NFE | ms/image | PSNR" of a cached evaluation
    local f="$EVALS/$1.json"
    if [ -z "$1" ] || [ ! -f "$f" ]; then echo "not run | | | |"; return; fi
    local p
    p=$(jget "$f" psnr)
    printf '%.2f | %.1f%% | %s | %.3f | %s' "$(jget "$f" fd)" "$(awk -v a="$(jget "$f" accuracy)" 'BEGIN {print 100 * a}')" \
        "$(jget "$f" nfe)" "$(jget "$f" ms_per_image)" "${p:+$p dB}"
}
fd_of() { if [ -n "$1" ] && [ -f "$EVALS/$1.json" ]; then jget "$EVALS/$1.json" fd; fi; }
key_of() {   # key_of FOLDER SUFFIX: the cached key, or best-w key with SUFFIX "best" / "best2"
    local dir=$1 suf=$2
    [ -f "$dir/ablation_done" ] || { echo ""; return; }
    local k
    k=$(g_key "$dir")
    case $suf in
        best) best_cached "$k" ;;
        best2) best_cached "$k.2nfe" ;;
        *) echo "$k.$suf" ;;
    esac
}
best_cached() {   # the cached grid record of the lowest FD for a key prefix
    local best="" best_fd="" w
    for w in $WS; do
        local f="$EVALS/$1.w$w.json"
        [ -f "$f" ] || continue
        local fd
        fd=$(jget "$f" fd)
        if [ -z "$best_fd" ] || awk -v a="$fd" -v b="$best_fd" 'BEGIN {exit !(a < b)}'; then best=$w; best_fd=$fd; fi
    done
    echo "${best:+$1.w$best}"
}
w_of() { [ -n "$1" ] && echo "${1##*.w}" || echo "-"; }
row() {   # row LABEL CHANGES W KEY1 KEY2 CURVE PAPER
    local fd1 fd2 extra=""
    if [ -n "$SEED2" ]; then
        fd1=$(fd_of "$4"); fd2=$(fd_of "$5")
        if [ -n "$fd1" ] && [ -n "$fd2" ]; then
            extra=$(awk -v a="$fd1" -v b="$fd2" 'BEGIN {d = a - b; if (d < 0) d = -d; printf " | %.2f | %.2f", b, d}')
        else extra=" | | "; fi
    fi
    local label=$1 st
    st=$(sed -n 's/^[a-z0-9-]*-\([0-9]*\)st-[0-9]*\..*/\1/p' <<< "$4")
    if [ -n "$st" ] && [ "${4#exact}" = "$4" ] && [ "$st" != "$STEPS" ]; then label="$label ($st steps)"; fi
    echo "| $label | $2 | $3 | $(cell "$4")$extra | $6 | $7 |"
}
S2=${SEED2:+-s$SEED2}
FLOOR=$(sed -n 's/^FD floor: *\([0-9.]*\).*/\1/p' "$EVALS/floor.log" 2>/dev/null || true)
ELAPSED=$(( $(date +%s) - START ))
{
    echo "## Ablation (generated by tools/ablation.sh)"
    echo
    echo "Command: \`tools/ablation.sh --steps $STEPS --batch $BATCH --flow-steps $FLOW_STEPS --seed $SEED${SEED2:+ --second-seed $SEED2}" \
         "--precision $PREC${SEED2:+ --second-precision $PREC2} --eval-n $EVAL_N --eval-seed $EVAL_SEED --ws \"$WS\"${G_OPTS:+ --g-opts \"$G_OPTS\"}\`."
    echo "Every G: $STEPS steps of $BATCH images against \`$FLOW\` (the norm-control rows: against their own F," \
         "$FLOW_STEPS steps each), training seed $SEED; FD against the test split on $EVAL_N class-conditional" \
         "samples (classes in turn, noise seed $EVAL_SEED, clamped 8-bit images) with the evaluation network." \
         "FD floor (real training images, N = $EVAL_N): ${FLOOR:-?}. This invocation of the script: $((ELAPSED / 60)) minutes (finished runs and cached evaluations skipped)," \
         "$(nproc) cores. Training runs in $PREC${SEED2:+ (seed $SEED2: $PREC2)}; every evaluation in $PREC. Rows at w = 0 are unguided (the paper's ablations are without guidance); \"best w\" is the" \
         "lowest FD over w in {$WS}. Curves: \`$DOCS/*.png\`; training times: \`$OUT/*/ablation_done\`."
    echo
    if [ -n "$SEED2" ]; then
        echo "| row | changes (vs the recipe) | w | FD | class accuracy | NFE | ms/image | G(F(x)) | FD seed $SEED2${SEED2:+$([ "$PREC2" = "$PREC" ] || echo ", $PREC2")} (its best w) | spread | curve | paper (FID) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    else
        echo "| row | changes (vs the recipe) | w | FD | class accuracy | NFE | ms/image | G(F(x)) | curve | paper (FID) |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
    fi
    A="$OUT/align"; A2="$OUT/align$S2"
    row "exact inverse F^-1 + score denoising" "no G (4 x 49 steps)" 0 exact.w0 "" - 44.46
    row "naive distillation" "--inverse naive" 0 "$(key_of "$OUT/naive" w0)" "$(key_of "$OUT/naive$S2" w0)" inverse.png 43.41
    row "hidden distillation" "--inverse distill" 0 "$(key_of "$OUT/distill" w0)" "$(key_of "$OUT/distill$S2" w0)" inverse.png 55.00
    row "hidden alignment (the recipe)" "-" 0 "$(key_of "$A" w0)" "$(key_of "$A2" w0)" inverse.png 36.93
    row "learned denoising (the recipe)" "-" 0 "$(key_of "$A" w0)" "$(key_of "$A2" w0)" denoise.png 31.88
    row "no denoising" "--denoise none" 0 "$(key_of "$OUT/nodenoise" none)" "$(key_of "$OUT/nodenoise$S2" none)" denoise.png 100.51
    row "score-based denoising" "--denoise none; eval --denoise score" 0 "$(key_of "$OUT/nodenoise" score)" "$(key_of "$OUT/nodenoise$S2" score)" denoise.png 42.62
    row "norm control on" "F: own, bound $FLOW_BOUND, $FLOW_STEPS steps" 0 "$(key_of "$OUT/normon" w0)" "$(key_of "$OUT/normon$S2" w0)" norm.png 31.88
    row "norm control off" "F: own, bound 0 (no clip), $FLOW_STEPS steps; --norm-control off" 0 "$(key_of "$OUT/normoff" w0)" "$(key_of "$OUT/normoff$S2" w0)" norm.png 45.54
    for fl in flowclip flownoclip; do
        if [ -f "$OUT/$fl/ablation_done" ]; then
            bpd=$(sed -n 's/^test bits\/dim.*: \([0-9.]*\)$/\1/p' "$OUT/logs/$fl.log" 2>/dev/null | tail -1)
            row "exact inverse of the $fl F (context)" "no G; F's test bits/dim ${bpd:-?}" 0 "exact-$(g_key "$OUT/$fl").w0" "" norm-flows.png -
        fi
    done
    row "MSE only" "--perceptual 0" 0 "$(key_of "$OUT/mse" w0)" "" perceptual.png 31.88
    row "MSE + perceptual (the recipe)" "-" 0 "$(key_of "$A" w0)" "" perceptual.png "14.15 (+LPIPS)"
    k1=$(key_of "$A" best); k2=$(key_of "$A2" best)
    row "training-time guidance, 1 NFE (the recipe)" "-" "$(w_of "$k1")" "$k1" "$k2" guidance.png 6.79
    k1=$(key_of "$OUT/cfgoff" best2); k2=$(key_of "$OUT/cfgoff$S2" best2)
    row "inference-time guidance, 2 NFE" "--cfg-train off; eval --cfg-two-pass" "$(w_of "$k1")" "$k1" "$k2" guidance.png 6.90
    k1=$(best_cached exact)
    row "exact inverse with guidance" "no G" "$(w_of "$k1")" "$k1" "" - "6.83 (iTARFlow-B/2)"
    echo
    echo "FD over the w grid ($WS):"
    for p in exact "$(g_key "$A")" "$(g_key "$OUT/cfgoff").2nfe" ${SEED2:+"$(g_key "$A2")" "$(g_key "$OUT/cfgoff$S2").2nfe"}; do
        line=""
        for w in $WS; do fd=$(fd_of "$p.w$w"); line="$line ${fd:--}"; done
        echo "- $p:$line"
    done
} > "$OUT/table.md"
echo "== wrote $OUT/table.md ($((ELAPSED / 60)) minutes)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "tools/ablation.sh: not finished: ${FAILED[*]} (run it again to resume)" >&2
    exit 1
fi
