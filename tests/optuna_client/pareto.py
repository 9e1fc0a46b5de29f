"""An unmodified Optuna script with two objectives whose study lives in Trainyard.

    python pareto.py HOST PORT STUDY_NAME TRIALS

Prints one JSON line with Optuna's own Pareto front (`best_trials`), for the test to compare
with the study as `/api/v1/studies` shows it.
"""
import json
import sys

import optuna
from optuna.storages import GrpcStorageProxy

host, port, name, n_trials = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = GrpcStorageProxy(host=host, port=port)


def objective(trial):
    x = trial.suggest_float("x", 0, 1)
    y = trial.suggest_float("y", 0, 1)
    return x, y * (1 - x)  # minimise x, maximise y(1 - x): a front, not one best


study = optuna.create_study(
    study_name=name,
    storage=storage,
    directions=["minimize", "maximize"],
    sampler=optuna.samplers.NSGAIISampler(seed=3, population_size=6),
)
study.optimize(objective, n_trials=n_trials)
print(json.dumps({
    "front": sorted(t.number for t in study.best_trials),
    "values": {str(t.number): t.values for t in study.trials},
}))
