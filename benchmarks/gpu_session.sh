#!/bin/bash
# Continue the study (benchmarks/study.py) in one call on a lent GPU machine, from the results
# committed under docs/results/study/ (finished runs are skipped; the tuned values are read from
# the committed tune.json), and leave the results (no checkpoints) in $OUT/results.tar.gz with
# the scheduler's log in $OUT/study.log.
#
# usage: bash benchmarks/gpu_session.sh STAGES DATASETS SEEDS BUDGET_S WORKERS [DEVICE]
#   e.g. bash benchmarks/gpu_session.sh main,robustness beauty,sports,toys 0,1,2 470 10
# Needs CATREC_GIT_COMMIT (the machine's copy may not know the commit), the datasets in
# .devdata/ (or CATREC_DATA_DIR) and, where the machine lacks them, the wheels in .whl/ (both
# carried; docs/results/study/README.md). Unpack here with:
#   tar xzf results.tar.gz && cp -r study/* docs/results/study/
set -u
: "${CATREC_GIT_COMMIT:?set CATREC_GIT_COMMIT to the commit being run}"
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
LOG=$OUT/study.log
if [ -d .whl ] && [ -z "${NO_PIP:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
DATA=${CATREC_DATA_DIR:-.devdata}
python3 -c "import torch, optuna, catrec.tune; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'optuna', optuna.__version__)" >>"$LOG" 2>&1 || exit 4
STUDY=/tmp/study
set -e  # a copy that fails must stop the call (no search: no tuned adversarial cells)
rm -rf $STUDY && mkdir -p $STUDY/plans $STUDY/tune
cp -r docs/results/study/tune/beauty-sasrec-seed0 $STUDY/tune/
# finished cells with ranks.npz are kept; older ones (no ranks.npz for the paired tests) retrain
for run in docs/results/study/main/*/*/; do
  if [ -f "$run/ranks.npz" ]; then
    mkdir -p "$STUDY/${run#docs/results/study/}" && cp -r "$run". "$STUDY/${run#docs/results/study/}"
  fi
done
[ -d docs/results/study/beyond ] && cp -r docs/results/study/beyond $STUDY/
[ -d docs/results/study/confirm ] && cp -r docs/results/study/confirm $STUDY/
cp docs/results/study/*.npz $STUDY/plans/
set +e
python3 benchmarks/study.py --data-dir "$DATA" --out $STUDY --workers "$5" --device "${6:-cuda}" \
  --trials 20 --stages "$1" --datasets "$2" --seeds "$3" --budget-s "$4" --grace-s 45 \
  --stop-starting-s 30 --tar "$OUT/results.tar.gz" --tar-every-s 60 >>"$LOG" 2>&1
code=$?
echo "study.py exit $code" >>"$LOG"
exit $code
