"""An unmodified Optuna script whose study lives in Trainyard (Optuna's GrpcStorageProxy).

    python study.py HOST PORT STUDY_NAME TRIALS

Prints one JSON line with what Optuna itself saw, for the test to compare with what
Trainyard's REST and MLflow APIs show.
"""
import json
import sys

import optuna
from optuna.storages import GrpcStorageProxy

host, port, name, n_trials = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = GrpcStorageProxy(host=host, port=port)


def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    layers = trial.suggest_int("layers", 1, 8)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd", None])
    for step in range(3):
        trial.report((x - 2) ** 2 + 1.0 / (step + 1), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("layers_seen", layers)
    if optimizer is None and x > 8:
        raise ValueError("diverged")  # a failing trial, recorded as FAIL
    return (x - 2) ** 2 + 0.01 * layers + (0 if optimizer == "adam" else 0.1) + lr


study = optuna.create_study(
    study_name=name,
    storage=storage,
    load_if_exists=True,
    sampler=optuna.samplers.TPESampler(seed=7),
    pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
)
study.set_user_attr("owner", "optuna-client-test")
study.enqueue_trial({"x": 2.0, "lr": 0.001, "layers": 2, "optimizer": "adam"})
study.optimize(objective, n_trials=n_trials, catch=(ValueError,))

# A second client loads the same study and sees every trial.
again = optuna.load_study(study_name=name, storage=storage)
duplicate = False
try:
    optuna.create_study(study_name=name, storage=storage)
except optuna.exceptions.DuplicatedStudyError:
    duplicate = True
states = {}
for t in again.trials:
    states[t.state.name] = states.get(t.state.name, 0) + 1
print(json.dumps({
    "trials": len(again.trials),
    "states": states,
    "best_number": again.best_trial.number,
    "best_value": again.best_value,
    "best_params": again.best_params,
    "first_params": again.trials[0].params,
    "user_attrs": again.user_attrs,
    "duplicate_refused": duplicate,
    "names": optuna.get_all_study_names(storage=storage),
}))
