"""A fit worker whose 'fits' are instructions (allocate, sleep, exit), for the pool's tests:
the real protocol and pool (tasks.train.fit_worker.serve, fit_workers), no TensorFlow."""

import os
import time
from multiprocessing.connection import Connection

from tasks.train.fit_worker import serve

KEPT = []  # memory a request asks to keep (a leak)


def tiny_fit(context, request):
    if request.get("allocate"):
        block = bytearray(request["allocate"])
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        if request.get("keep"):
            KEPT.append(block)
    time.sleep(request.get("sleep", 0))
    if "exit" in request:
        os._exit(request["exit"])
    if "raise" in request:
        raise ValueError(request["raise"])
    answer = {"pid": os.getpid(), "context": context, "value": request.get("value")}
    if "environ" in request:
        answer["environ"] = os.environ.get(request["environ"])
    return answer


def run(receive: Connection, send: Connection) -> None:
    serve(receive, send, lambda: tiny_fit)
