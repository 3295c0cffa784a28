#!/usr/bin/env bash
# Issue 12's meta-model target, with the defaults: 8 simulated hopf sessions (mu from -1 to 2, 96 trials x
# 80 bins x 40 neurons each), `fit --time-limit 8`, then `adapt` a 9th session (mu 0.75) from 8 trials and
# `embed` all nine. Run in an empty folder:  bash benchmarks/meta_target.sh  (XFADS=path/to/xfads).
# Reads: fit.json (per-session valid_fp_bps), embed.json (embed_mean per session, in the order above).
set -euo pipefail
X=${XFADS:-xfads}
mkdir -p sessions
i=0
for mu in -1.0 -0.5 0.0 0.25 0.5 1.0 1.5 2.0; do
  $X simulate hopf --out sessions/s$i.h5 --param $mu --neurons 40 --trials 96 --bins 80 --seed $((500+i)) --overwrite 2>>sim.err
  i=$((i+1))
done
$X simulate hopf --out new.h5 --param 0.75 --neurons 40 --trials 96 --bins 80 --seed 599 --overwrite 2>>sim.err
$X fit sessions --out run --time-limit 8 --overwrite --json > fit.json 2> fit.err
$X adapt run new.h5 --trials 8 --out run_new --overwrite --json > adapt.json 2> adapt.err
$X embed run_new sessions/*.h5 new.h5 --out embed.h5 --overwrite --json > embed.json 2> embed.err
echo done
