"""Planning: which jobs share a stacked program, and how a run's groups are cut for its workers.

Pure Python: the flow plans before any training (flows.stages imports this), so nothing here
may load TensorFlow.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict

from tasks.records import DenseNetwork, FitJob
from tasks.train.fast.schedules import job_order, trajectory_id

# Cost model for planning, in model-steps (one stacked model for one step, ~3.5 us measured
# on 2 cores): a step also costs ~10 us whatever the stack, i.e. STEP_OVERHEAD_MODELS more
# models, and a group a fixed GROUP_OVERHEAD (program call, scoring, task bookkeeping).
STEP_OVERHEAD_MODELS = 3.0
GROUP_OVERHEAD = 20_000.0
NOMINAL_TRAIN_ROWS = 512
# A model's step also costs by its size (model_step_work): each batch row's multiply-adds
# (forward; backward and update scale with them) and each value a layer reads or writes
# (gathered, activated, dropped out, back-propagated: ~VALUE_WORK multiply-adds' time), one
# model-step per ROW_WORK_PER_MODEL_STEP of them. Measured on 2 cores, 60 stacked models,
# 16,000 rows, batch 256: 106-16-8-1 ~135 us a model-step, 106-64-32-1 ~380 us (2.8x).
VALUE_WORK = 20.0
ROW_WORK_PER_MODEL_STEP = 31_250.0


# Memory bound at scale: batch rows per step across a program's models (the chunk of batch
# rows is [CHUNK_STEPS, models, batch] int32: 64 MiB); pieces per worker worth planning.
STACK_ROW_BUDGET = 16_384
MAX_PIECES_PER_WORKER = 8
# Jobs per task run of the vectorized path (each a built Keras model in the worker).
MAX_VECTORIZED_COPIES = 256


def fast_engine_applies(jobs: list[FitJob]) -> bool:
    """True when inspection found a network the fast engine reproduces for every job."""
    return all(job.network is not None for job in jobs)


def _architecture(job: FitJob) -> tuple:
    assert job.network is not None
    return job.network.architecture


def plan_groups(
    jobs: list[FitJob], workers: int, train_rows: int = NOMINAL_TRAIN_ROWS
) -> list[list[FitJob]]:
    """Split a run's jobs into task-sized groups, longest first (staggered by program where
    that costs nothing: _staggered), for `workers` threads.

    A group is one stacked program, which runs as long as its longest trajectory and costs
    every stacked model each step, so groups hold trajectories of one architecture, batch size
    and length (no idle padding). Each such class is cut into near-equal pieces of at most
    `cap` trajectories (and at most STACK_ROW_BUDGET batch rows per step, which bounds a
    program's memory); the cap is the one whose simulated longest-first schedule on `workers`
    threads finishes first (ties: fewer groups). Jobs of one trajectory stay together.
    `train_rows` (a fold's training rows) sets the steps per epoch of the cost model, which
    weighs each model's step by its network's size (model_step_work).
    """
    singles = [[job] for job in jobs if job.network is None and not job.vectorized]
    singles = vectorized_groups(jobs) + singles
    trajectories: dict[tuple[str, int, int], list[FitJob]] = defaultdict(list)
    for job in jobs:
        if job.network is not None:
            trajectories[trajectory_id(job)].append(job)
    if not trajectories:
        return singles
    classes: dict[tuple, list[list[FitJob]]] = defaultdict(list)
    for members in trajectories.values():
        model = members[0].model
        length = max(job.model.epochs - job.start_epoch for job in members)
        classes[(_architecture(members[0]), model.batch_size, length)].append(members)
    ordered = [
        sorted(members, key=lambda t: job_order(t[0]))
        for _, members in sorted(classes.items(), key=lambda item: repr(item[0]))
    ]
    limits = [stack_limit(members[0][0].model.batch_size) for members in ordered]

    def plan(cap: int) -> list[list[list[FitJob]]]:
        return [
            piece
            for members, limit in zip(ordered, limits, strict=True)
            for piece in _split_evenly(members, min(cap, limit))
        ]

    # min() keeps the first of equals: the plan with the fewest groups.
    cap = min(
        candidate_caps([len(members) for members in ordered], workers),
        key=lambda cap: _simulated_makespan(
            [_group_cost(piece, train_rows) for piece in plan(cap)], workers
        ),
    )
    pieces = sorted(plan(cap), key=lambda piece: _group_cost(piece, train_rows), reverse=True)
    pieces = _staggered(pieces, workers, train_rows)
    grouped = [sorted((job for t in piece for job in t), key=job_order) for piece in pieces]
    return grouped + singles


def _program_shape(piece: list[list[FitJob]]) -> tuple:
    """What a piece's compiled program depends on (planning's view): architecture, batch
    size, stacked models."""
    first = piece[0][0]
    return (_architecture(first), first.model.batch_size, len(piece))


def _staggered(
    pieces: list[list[list[FitJob]]], workers: int, train_rows: int
) -> list[list[list[FitJob]]]:
    """The pieces (longest first) reordered so that the groups the workers start together
    need different programs where they can, when that finishes no later in the cost model.

    Why: a program is XLA-compiled by the first group that runs it; a second group started at
    the same time waits for that compile, while two different programs compile side by side.
    Longest first, two 64-unit pieces start together and compile one program in turn;
    staggered (64, 16, 64, 16), each worker compiles its own."""
    shapes: dict[tuple, list[list[list[FitJob]]]] = defaultdict(list)
    for piece in pieces:
        shapes[_program_shape(piece)].append(piece)
    if len(shapes) < 2 or workers < 2:
        return pieces
    queues = list(shapes.values())  # by each shape's longest piece, longest first
    staggered = []
    while any(queues):
        for queue in queues:
            if queue:
                staggered.append(queue.pop(0))
    costs = {id(piece): _group_cost(piece, train_rows) for piece in pieces}
    longest_first = _fifo_makespan([costs[id(piece)] for piece in pieces], workers)
    if _fifo_makespan([costs[id(piece)] for piece in staggered], workers) <= longest_first:
        return staggered
    return pieces


def _fifo_makespan(costs: list[float], workers: int) -> float:
    """Finish time when a FIFO pool of `workers` threads takes the groups in this order."""
    finish = [0.0] * max(1, workers)
    for cost in costs:
        heapq.heapreplace(finish, finish[0] + cost)
    return max(finish)


def vectorized_groups(jobs: list[FitJob]) -> list[list[FitJob]]:
    """The vectorized path's jobs (tasks.train.vectorized): one group per program key and batch
    size (one compiled program), at most MAX_VECTORIZED_COPIES jobs each, in job order."""
    copies: dict[tuple[str, int], list[FitJob]] = defaultdict(list)
    for job in jobs:
        if job.network is None and job.vectorized:
            copies[(job.vectorized, job.model.batch_size)].append(job)
    return [
        members[start : start + MAX_VECTORIZED_COPIES]
        for members in copies.values()
        for start in range(0, len(members), MAX_VECTORIZED_COPIES)
    ]


def stack_limit(batch_size: int) -> int:
    """Most models one program stacks at this batch size: its per-chunk batch rows
    ([CHUNK_STEPS, models, batch]) stay within STACK_ROW_BUDGET rows per step."""
    return max(1, STACK_ROW_BUDGET // max(1, batch_size))


def candidate_caps(class_sizes: list[int], workers: int) -> list[int]:
    """Caps worth simulating, largest first: a plan only changes where some class's piece
    count ceil(n / cap) does (O(sqrt n) values per class, not n), and more than
    MAX_PIECES_PER_WORKER pieces per worker of the largest class only adds overhead."""
    largest = max(class_sizes)
    smallest = math.ceil(largest / (MAX_PIECES_PER_WORKER * max(1, workers)))
    caps = {largest}
    for size in class_sizes:
        count = 1
        while count <= size:
            cap = math.ceil(size / count)
            if cap >= smallest:
                caps.add(cap)
            # the next count whose cap differs
            count = max(count + 1, math.ceil(size / (cap - 1)) if cap > 1 else size + 1)
    return sorted(caps, reverse=True)


def _split_evenly(members: list[list[FitJob]], cap: int) -> list[list[list[FitJob]]]:
    """Near-equal contiguous pieces of at most `cap` trajectories (equal sizes share a shape)."""
    count = math.ceil(len(members) / cap)
    size, extra = divmod(len(members), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(members[start:end])
        start = end
    return pieces


def _group_cost(piece: list[list[FitJob]], train_rows: int = NOMINAL_TRAIN_ROWS) -> float:
    """Estimated cost in model-steps: loop length times (models, each weighed by its size
    (model_step_work), + per-step overhead)."""
    first = piece[0][0]
    model = first.model
    epochs = max(job.model.epochs - job.start_epoch for trajectory in piece for job in trajectory)
    steps = epochs * math.ceil(train_rows / model.batch_size)
    work = model_step_work(first.network, min(model.batch_size, train_rows))
    return steps * (len(piece) * work + STEP_OVERHEAD_MODELS) + GROUP_OVERHEAD


def model_step_work(network: DenseNetwork | None, batch: int) -> float:
    """One model's step in model-steps: 1 (the nominal tiny model) plus its batch rows' work,
    multiply-adds and values (row_work), so that a wide network's group weighs more."""
    if network is None:
        return 1.0
    return 1.0 + batch * sum(row_work(network)) / ROW_WORK_PER_MODEL_STEP


def row_work(network: DenseNetwork) -> tuple[float, float]:
    """(multiply-adds, values * VALUE_WORK) of one row through the network's Dense layers:
    a chain's from its sizes, a graph's from its nodes' shapes."""
    if not network.graph:
        sizes = network.sizes
        macs = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
        return float(macs), VALUE_WORK * sum(sizes)
    macs = values = 0.0
    for node in network.graph:
        width = math.prod(node.shape) if node.shape else 0
        values += width
        if node.kind == "dense" and node.inputs and node.shape:
            source = network.graph[node.inputs[0]]
            macs += (math.prod(source.shape) if source.shape else 0) * node.shape[-1]
    return macs, VALUE_WORK * values


def _simulated_makespan(costs: list[float], workers: int) -> float:
    """Finish time when a FIFO pool of `workers` threads takes the groups longest first."""
    finish = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(finish, finish[0] + cost)
    return max(finish)
