"""The planner weighs a model's step by its size: a grid over widths (issue 25's benchmark:
16 or 64 units, 106 encoded columns) is cut so that two workers end together, instead of one
program per width with the wide one ending seconds after the narrow one."""

from tasks.config import ModelParams
from tasks.records import DenseNetwork, FitJob, GraphNode
from tasks.train.fast.planning import (
    _group_cost,
    _simulated_makespan,
    model_step_work,
    plan_groups,
    row_work,
)
from tasks.train.fast.schedules import trajectory_id


def network(units: int, width: int = 106) -> DenseNetwork:
    return DenseNetwork(
        sizes=(width, units, units // 2, 1),
        activations=("relu", "relu", "sigmoid"),
        biases=(True, True, True),
        optimizer="adam",
        settings={"learning_rate": 0.003, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        dropout=(None, 0.2, None),
    )


def grid_jobs(widths=(16, 64), per_width: int = 12, folds: int = 5) -> list[FitJob]:
    """The benchmark's grid: combinations alternate widths, every one on every fold."""
    jobs = []
    for combination in range(per_width * len(widths)):
        units = widths[combination % len(widths)]
        arguments = {"units": units, "learning_rate": combination}
        model = ModelParams(arguments=arguments, epochs=3, batch_size=256)
        for fold in range(folds):
            jobs.append(
                FitJob(
                    combination=combination,
                    params=arguments,
                    model=model,
                    fold=fold,
                    network=network(units),
                )
            )
    return jobs


def trajectories(group: list[FitJob]) -> list[list[FitJob]]:
    by_id: dict = {}
    for job in group:
        by_id.setdefault(trajectory_id(job), []).append(job)
    return list(by_id.values())


def test_a_wider_network_costs_more_per_step():
    narrow, wide = model_step_work(network(16), 256), model_step_work(network(64), 256)
    # measured: ~135 us and ~380 us a model-step on 2 cores (2.8x)
    assert 2.4 < wide / narrow < 3.2
    assert model_step_work(None, 256) == 1.0
    assert row_work(network(16))[0] == 106 * 16 + 16 * 8 + 8 * 1


def test_graph_work_counts_each_dense_node_on_its_input():
    graph = DenseNetwork(
        sizes=(4, 8, 1),
        activations=("relu", "sigmoid"),
        biases=(True, True),
        optimizer="adam",
        settings={"learning_rate": 0.01},
        graph=(
            GraphNode(kind="input", shape=(4,)),
            GraphNode(kind="dense", inputs=(0,), shape=(8,), dense=0),
            GraphNode(kind="dense", inputs=(1,), shape=(1,), dense=1),
        ),
    )
    macs, values = row_work(graph)
    assert macs == 4 * 8 + 8 * 1
    assert values > 0


def test_two_widths_plan_into_groups_that_end_together():
    jobs = grid_jobs()
    groups = plan_groups(jobs, workers=2, train_rows=16_000)
    # every fit planned once, trajectories whole, one width per group
    assert sorted((j.combination, j.fold) for g in groups for j in g) == sorted(
        (j.combination, j.fold) for j in jobs
    )
    assert all(len({j.network.sizes for j in g}) == 1 for g in groups)
    costs = [_group_cost(trajectories(g), 16_000) for g in groups]
    # the two groups started together need different programs: each worker compiles its own
    assert groups[0][0].network.sizes != groups[1][0].network.sizes
    # One program per width would leave a worker idle for most of the wide group's time;
    # the plan's two workers (a FIFO pool, in the plan's order) now end within 5 % of each
    # other.
    finish = [0.0, 0.0]
    for cost in costs:
        finish[finish.index(min(finish))] += cost
    assert max(finish) - min(finish) < 0.05 * max(finish)
    per_width = [
        [trajectories(g) for g in groups if g[0].network.sizes[1] == units] for units in (16, 64)
    ]
    one_each = [_group_cost([t for piece in pieces for t in piece], 16_000) for pieces in per_width]
    assert _simulated_makespan(costs, 2) < 0.8 * _simulated_makespan(one_each, 2)
    # the same program shapes as before (near-equal pieces): no more compiles
    assert len({(g[0].network.sizes, len(trajectories(g))) for g in groups}) == 2


def test_one_width_still_plans_one_group_per_worker_share():
    jobs = grid_jobs(widths=(16,), per_width=24)
    groups = plan_groups(jobs, workers=2, train_rows=16_000)
    assert [len(trajectories(g)) for g in groups] == [60, 60]


def test_one_program_shape_keeps_the_longest_first_order():
    jobs = grid_jobs(widths=(64,), per_width=24)
    groups = plan_groups(jobs, workers=4, train_rows=16_000)
    costs = [_group_cost(trajectories(g), 16_000) for g in groups]
    assert costs == sorted(costs, reverse=True)
