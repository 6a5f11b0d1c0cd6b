"""Task-run names (tasks.train.naming)."""

from tasks.records import FitJob
from tasks.train.naming import describe_jobs
from tests.support import mlp_params


def test_task_run_names_say_which_fits_they_hold():
    routed = {"optimizer": "adam", "init": "uniform", "epochs": 150, "batch_size": 5}
    job = FitJob(combination=3, params=routed, model=mlp_params(**routed), fold=2)
    assert describe_jobs([job]) == "adam | uniform | e150 | b5 | fold2"
    folds = [job.model_copy(update={"fold": fold}) for fold in range(5, 10)]
    assert describe_jobs(folds) == "adam | uniform | e150 | b5 | fold5-9 (5 fits)"
    group = [job, job.model_copy(update={"combination": 4, "fold": 0})]
    assert describe_jobs(group) == "2 fits | combos 3-4 | b5 | folds 0,2"


def test_a_sampled_float_is_rounded_as_in_the_results_table():
    routed = {"learning_rate": 0.0017567312128322, "epochs": 3, "batch_size": 32}
    job = FitJob(combination=0, params=routed, model=mlp_params(**routed), fold=0)
    assert describe_jobs([job]) == "0.001757 | e3 | b32 | fold0"
