#!/usr/bin/env bash
# One study, many machines: every task of this SLURM job array is a worker on the same PostgreSQL
# study. Workers only share the database (and, for figures, the --out folder on a shared file
# system); Optuna's RDB storage coordinates them. Submit with:
#
#   export GEOSTUDY_STORAGE='postgresql+psycopg://geo:SECRET@db.example.org/geostudy'
#   sbatch --array=0-31 --export=ALL scripts/slurm_array.sh labeling 400
#
# The URL travels in the environment, so the password never shows in `squeue` or `ps`.
#SBATCH --job-name=geostudy
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=24:00:00
#SBATCH --output=out/slurm/%x-%A_%a.log
#SBATCH --signal=B:TERM@120
set -euo pipefail

study=${1:?usage: slurm_array.sh STUDY N_TRIALS}
n_trials=${2:?usage: slurm_array.sh STUDY N_TRIALS}
: "${GEOSTUDY_STORAGE:?set GEOSTUDY_STORAGE to the PostgreSQL URL}"

cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p out/slurm
# SIGTERM from SLURM at the time limit (--signal above) fails the running trial cleanly; a killed
# node is caught by the heartbeat (on by default on PostgreSQL: 30 s beats, failed 120 s after the
# last; heartbeat_interval/grace_period in the study file change them) and its trial is re-run by
# another worker. --n-trials is the study's total over all workers.
exec .venv/bin/python optuna_hyper.py --study "$study" --n-trials "$n_trials" --out out --no-progress
