#!/bin/bash
# Grade one lab for a large class as a Slurm array job: task K of N grades shard K/N, then one
# dependent job merges the shards into a single gradebook.csv and feedback/ folder.
#
#   LAB=labs/lab04_alexnet_vgg.ipynb SUBS=submissions/lab04 OUT=grades/lab04 \
#       sbatch --array=1-16 examples/slurm_grade.sh
#
# Each student's shard is fixed by a hash of the name, so tasks share nothing and a late
# submission only adds work to its own shard: re-submit that one task (--array=K) and merge again.
# Size --cpus-per-task and --time with the README's "Sizing a cluster" (a kernel uses one core).
#SBATCH --job-name=cnncourse-grade
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

: "${LAB:?set LAB to the source lab, e.g. labs/lab04_alexnet_vgg.ipynb}"
: "${SUBS:?set SUBS to the folder of submissions}"
: "${OUT:?set OUT to the grades folder; shard K writes OUT/shard-K}"
K=${SLURM_ARRAY_TASK_ID:?run with sbatch --array=1-N}
N=${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array=1-N}
PYTHON=${PYTHON:-python}
# The same limits on every node (take them from one calibrating run: `grade` prints them); without them
# each node calibrates on its own hardware and grade-merge warns that the limits differ.
LIMITS=${LIMITS:-}
# The course secret, if any, comes from the environment (export CNNCOURSE_SECRET before sbatch; never argv).

# shellcheck disable=SC2086  # LIMITS holds several options
"$PYTHON" -m cnncourse grade "$LAB" "$SUBS" --out "$OUT/shard-$K" --shard "$K/$N" \
    --jobs "${SLURM_CPUS_PER_TASK:-1}" --no-progress $LIMITS

# The last task to start queues the merge; it runs once every task of the array has succeeded.
if [[ "$K" == "$N" ]]; then
    shards=()
    for ((i = 1; i <= N; i++)); do shards+=("$OUT/shard-$i"); done
    sbatch --dependency="afterok:${SLURM_ARRAY_JOB_ID}" --job-name=cnncourse-merge --time=00:10:00 \
        --wrap "$PYTHON -m cnncourse grade-merge ${shards[*]} --out $OUT/merged"
fi
