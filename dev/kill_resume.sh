#!/bin/bash
# kill -9 a tiny training at random moments, resume each time; compare with an uninterrupted run
cd "$(dirname "$0")/.."
B=./biflow; D=${D:-/tmp/biflow-kill}; mkdir -p $D
OPTS="--config fmnist-tiny --steps 120 --ckpt-every 5 --log-every 5 --eval-every 0 --threads 2 --quiet"
rm -rf $D/ref $D/k
$B train-flow $OPTS --out $D/ref > $D/ref.log 2>&1
kills=0
$B train-flow $OPTS --out $D/k > /dev/null 2>&1 &
P=$!
for i in $(seq 1 20); do
  sleep 0.$((RANDOM % 9 + 1))
  if kill -0 $P 2>/dev/null; then kill -9 $P; wait $P 2>/dev/null; kills=$((kills+1)); fi
  R=""; [ -f $D/k/train_state.safetensors ] && R="--resume" || R="--overwrite"
  $B train-flow $OPTS --out $D/k $R > /dev/null 2>&1 &
  P=$!
done
wait $P
cmp $D/ref/flow.safetensors $D/k/flow.safetensors && echo "weights identical after $kills kills" || echo "DIFFER after $kills kills"
cmp $D/ref/flow_ema.safetensors $D/k/flow_ema.safetensors && echo "EMA identical"
echo "log lines: ref $(wc -l < $D/ref/log.jsonl), killed $(wc -l < $D/k/log.jsonl)"
ls $D/k | grep tmp || echo "no temporary files left"
