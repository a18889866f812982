"""A stand-in for Hugging Face's `spaces` package with ZeroGPU's calling contract, for tests:
a decorated function runs in a process forked for the call (only the calling thread exists
there), its arguments and result pickled across. `calls` records (function name, worker pid).
"""
from __future__ import annotations

import functools
import multiprocessing
import pickle

calls: list[tuple[str, int]] = []


def GPU(fn=None, duration=60):  # noqa: N802 (the real package's name)
    def decorate(f):
        @functools.wraps(f)
        def in_worker(*args, **kwargs):
            ctx = multiprocessing.get_context("fork")
            receive, send = ctx.Pipe(duplex=False)
            payload = pickle.dumps((f, args, kwargs))

            def work():
                import os
                func, a, k = pickle.loads(payload)
                try:
                    send.send(("ok", os.getpid(), func(*a, **k)))
                except BaseException as e:  # sent back and raised in the caller
                    send.send(("error", os.getpid(), e))

            worker = ctx.Process(target=work, daemon=True)
            worker.start()
            if not receive.poll(120):
                worker.kill()
                raise TimeoutError(f"{f.__name__} did not answer from its forked worker")
            status, pid, value = receive.recv()
            worker.join()
            calls.append((f.__name__, pid))
            if status == "error":
                raise value
            return value
        return in_worker
    return decorate(fn) if fn is not None else decorate
