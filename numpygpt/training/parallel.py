"""Data parallelism: N processes train one model as if they were one process with the whole batch.

Every process (a *rank*, 0 .. N-1) holds the whole model and the same seeded data generator.
Each step every rank draws the same global batch of B rows, keeps its own B/N rows, and
computes the gradient of the mean loss over them. One all-reduce sums the N gradients; divided
by N that is exactly the gradient of the mean loss over all B rows (all rows have T targets):

    L = 1/(B T) sum_b sum_t l_bt = 1/N sum_r L_r,   L_r = 1/((B/N) T) sum_{b in rank r} sum_t l_bt

so grad L = 1/N sum_r grad L_r. Then every rank applies the same clip and AdamW update to the
same parameters, and the N copies of the model stay identical without ever being sent.

The engine is MPI (mpi4py, with MPICH or Open MPI): `mpiexec -n 2 python -m numpygpt train`.
Without mpiexec, `get_world()` is a one-process world that never imports MPI.

Shapes: P the number of parameters (all tensors flattened into one buffer), B the global batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback

import numpy as np

from ..errors import ConfigError, UserError

# What launchers put in each process's environment: MPICH's hydra and Slurm's PMI (PMI_SIZE),
# Open MPI (OMPI_COMM_WORLD_SIZE), MVAPICH (MV2_COMM_WORLD_SIZE). PMIx launchers set a rank only.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_ONLY_VARS = ("PMIX_RANK",)


class PeerFailed(UserError):
    """Another rank failed (it reports why itself); this rank stops quietly with it."""

    quiet = True  # the command line prints nothing for it
    agreed = True  # every rank is stopping (see `together`): no abort needed


def launched_size(environ=None):
    """How many processes the launcher started, from the environment: 1 without mpiexec, None
    when launched by MPI without saying how many (then MPI itself is asked)."""
    environ = os.environ if environ is None else environ
    for var in _SIZE_VARS:
        value = environ.get(var, "").strip()
        if value.isdigit():
            return int(value)
    return None if any(v in environ for v in _RANK_ONLY_VARS) else 1


class SingleProcess:
    """The world of a plain `python -m numpygpt train`: one rank, nothing to communicate."""

    rank, size, local_size, is_root = 0, 1, 1, True

    def allreduce_sum_(self, buf):
        return buf

    def allreduce_scalars(self, values):
        return np.asarray(values, dtype=np.float64)

    def barrier(self):
        pass

    def bcast_json(self, obj):
        return obj

    def abort(self, code=1):
        raise SystemExit(code)

    def __repr__(self):
        return "SingleProcess()"


class MPIWorld:
    """N ranks talking through mpi4py's buffer interface (the upper-case methods: raw NumPy
    buffers, no pickling)."""

    def __init__(self, comm, MPI):
        self.comm, self._MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        # Ranks on this machine: they share its cores (see train's BLAS thread limit).
        self.local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()

    def allreduce_sum_(self, buf):
        """Sum a contiguous float32 or float64 buffer over all ranks, in place; every rank gets
        the same sum (MPI reduces each element once and sends the result to all)."""
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf

    def allreduce_scalars(self, values):
        """A few numbers (a loss, a stop flag) summed over ranks, in float64."""
        return self.allreduce_sum_(np.array(values, dtype=np.float64))

    def barrier(self):
        self.comm.Barrier()

    def bcast_json(self, obj):
        """Rank 0's `obj` (anything JSON can hold) on every rank: its JSON text goes out as
        raw bytes, its length first (no pickling)."""
        data = json.dumps(obj, sort_keys=True).encode() if self.is_root else b""
        n = np.array([len(data)], dtype=np.int64)
        self.comm.Bcast(n, root=0)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.is_root else \
            np.empty(int(n[0]), dtype=np.uint8)
        self.comm.Bcast(buf, root=0)
        return json.loads(buf.tobytes())

    def abort(self, code=1):
        """End every rank of the job now (mpiexec kills them): a rank that stops alone would
        leave the others waiting in their next all-reduce forever."""
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards our output through pipes that the abort closes: give the message
        # a moment to get through (seen lost, once in a few dozen runs, without it)
        time.sleep(0.5)
        self.comm.Abort(code)
        os._exit(code)  # MPI_Abort may return before the launcher has ended this process

    def __repr__(self):
        return f"MPIWorld(rank={self.rank}, size={self.size})"


_WORLD = None


def get_world():
    """The world this process belongs to (cached): SingleProcess unless launched by mpiexec
    with more than one process. mpi4py is imported only then; a missing one is a UserError."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    size = launched_size()
    if size == 1:
        _WORLD = SingleProcess()
        return _WORLD
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(f"launched by MPI as {size or 'several'} processes, but mpi4py is not "
                        f"installed: pip install -e .[mpi] (mpi4py and MPICH), or run without "
                        f"mpiexec") from None
    comm = MPI.COMM_WORLD
    if size is not None and comm.Get_size() != size:
        raise UserError(f"the launcher started {size} processes but MPI sees "
                        f"{comm.Get_size()}: mpiexec and mpi4py come from different MPI "
                        f"libraries; use the mpiexec beside this Python "
                        f"({os.path.join(os.path.dirname(sys.executable), 'mpiexec')})")
    _WORLD = SingleProcess() if comm.Get_size() == 1 else MPIWorld(comm, MPI)
    return _WORLD


def rank_label():
    """' (rank r of N)' in a data-parallel run, '' otherwise (never imports MPI)."""
    w = _WORLD
    return f" (rank {w.rank} of {w.size})" if w is not None and w.size > 1 else ""


def share_cores(world):
    """Give each of the ranks on this machine its share of the cores for BLAS: OpenBLAS starts
    one thread per core in every process, and 2 ranks x 2 threads on 2 cores slow each other
    down. A thread count the user set (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS) is kept."""
    if any(v in os.environ for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS")):
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(max(1, (os.cpu_count() or 1) // world.local_size))


# --- one buffer for all gradients ---------------------------------------------------------------


def flatten(grads, keys, out=None):
    """Copy the arrays grads[k] for k in keys, in that order, into one contiguous 1-D buffer:
    one all-reduce of P numbers costs far less than one per tensor (each call has a latency).

    Returns out: (P,) of the grads' dtype (allocated if None)."""
    total = sum(grads[k].size for k in keys)
    if out is None:
        out = np.empty(total, dtype=grads[keys[0]].dtype)
    if out.shape != (total,):
        raise ValueError(f"out has shape {out.shape}, the gradients need ({total},)")
    i = 0
    for k in keys:
        n = grads[k].size
        out[i:i + n] = grads[k].ravel()
        i += n
    return out


def unflatten(buf, shapes, keys):
    """The inverse of flatten: {k: view of buf with shapes[k]} (views, no copies)."""
    out, i = {}, 0
    for k in keys:
        n = int(np.prod(shapes[k], dtype=np.int64))
        out[k] = buf[i:i + n].reshape(shapes[k])
        i += n
    if i != buf.size:
        raise ValueError(f"buf has {buf.size} numbers, the shapes {i}")
    return out


def shard_rows(batch_size, rank, size):
    """The rows [r B/N, (r+1) B/N) of a global batch that rank r computes (a slice).
    A batch that N ranks cannot share equally is a ConfigError."""
    if batch_size % size != 0:
        raise ConfigError(f"batch-size {batch_size} is not divisible by the {size} MPI "
                          f"processes: every rank takes an equal share of the global batch; "
                          f"choose a multiple of {size}")
    per = batch_size // size
    return slice(rank * per, (rank + 1) * per)


class GradAllReduce:
    """Average the ranks' gradients with one all-reduce of one float32 buffer per step.

        avg = GradAllReduce(world, model.params)
        grads = avg(grads)      # views into avg.buf: sum over ranks / N
    """

    def __init__(self, world, params):
        self.world = world
        self.keys = list(params)
        self.shapes = {k: params[k].shape for k in self.keys}
        self.buf = np.empty(sum(params[k].size for k in self.keys),
                            dtype=params[self.keys[0]].dtype)  # (P,)

    def __call__(self, grads):
        flatten(grads, self.keys, out=self.buf)
        self.world.allreduce_sum_(self.buf)
        self.buf *= self.buf.dtype.type(1.0 / self.world.size)  # mean of the ranks' means
        return unflatten(self.buf, self.shapes, self.keys)


# --- how an all-reduce works: a ring, simulated ------------------------------------------------


def ring_allreduce(buffers):
    """Simulate, in one process, the ring all-reduce that MPI runs for large buffers.

    N workers stand in a ring; each cuts its buffer into N chunks. Reduce-scatter: in each of
    N-1 steps every worker sends one chunk to its right-hand neighbour, which adds it to its
    own; afterwards worker r holds the full sum of chunk r+1. All-gather: in N-1 more steps the
    summed chunks travel round the ring (copied, not added) until every worker has all of them.
    Each worker sends 2(N-1) chunks of size/N numbers: 2 (N-1)/N x its buffer, whatever N.

    Inputs:
    - buffers: N 1-D arrays of the same length (one per worker; not modified)

    Returns (results, sent, history):
    - results: N arrays, each the sum of all buffers (the same numbers on every worker)
    - sent: (N,) numbers each worker sent
    - history: 2(N-1)+1 arrays (N, N): [r, c] = how many workers' buffers worker r's chunk c
      holds, before the first step and after each one
    """
    N = len(buffers)
    chunks = [np.array_split(np.array(b, copy=True), N) for b in buffers]  # [worker][chunk]
    count = np.ones((N, N), dtype=np.int64)  # each chunk holds its own worker's numbers
    sent = np.zeros(N, dtype=np.int64)
    history = [count.copy()]

    def step(which, add):
        # every worker sends at once: take all the messages first, then deliver them
        msgs = [(r, which(r), chunks[r][which(r)].copy(), count[r, which(r)]) for r in range(N)]
        for r, c, data, n in msgs:
            dst = (r + 1) % N  # the right-hand neighbour
            if add:
                chunks[dst][c] += data
                count[dst, c] += n
            else:
                chunks[dst][c] = data
                count[dst, c] = n
            sent[r] += data.size
        history.append(count.copy())

    for s in range(N - 1):  # reduce-scatter: worker r passes on chunk r - s, summed so far
        step(lambda r, s=s: (r - s) % N, add=True)
    for s in range(N - 1):  # all-gather: worker r passes on the complete chunk r + 1 - s
        step(lambda r, s=s: (r + 1 - s) % N, add=False)
    return [np.concatenate(c) for c in chunks], sent, history


# --- failing together ---------------------------------------------------------------------------


@contextlib.contextmanager
def together(world):
    """Run a block on every rank; if it raised on any rank, raise on every rank, so none is
    left waiting in a collective call for a rank that has stopped. Use it around work that
    cannot hang by itself (checks, file reads), e.g. a run's setup.

    The rank(s) that failed raise their own error; the others raise PeerFailed (quiet: one
    rank's message is enough). When rank 0 failed, its error is the one shown, as the other
    ranks' usually is the same one (a bad flag). A bug (not a UserError) keeps its traceback.
    One all-reduce of N numbers at the end of the block; nothing at all in a SingleProcess.
    """
    if world.size == 1:
        yield
        return
    failed = np.zeros(world.size)
    try:
        yield
    except BaseException as e:
        failed[world.rank] = 1
        failed = world.allreduce_scalars(failed)
        e.agreed = True  # all ranks know: abort_on_error lets it pass
        if world.rank == 0 or failed[0] == 0 or not isinstance(e, UserError):
            raise
        raise PeerFailed(f"rank 0 failed: {e}") from None
    failed = world.allreduce_scalars(failed)
    if failed.any():
        first = int(np.flatnonzero(failed)[0])
        raise PeerFailed(f"rank {first} failed")


def check_same_settings(world, settings):
    """Every rank must run with rank 0's settings (a dict of the flags): one rank given another
    --max-iters would wait in an all-reduce that the others never make, another --lr would
    train its own model. Rank 0's settings are broadcast and compared; a rank that differs
    raises ConfigError naming the first setting (inside `together`: every rank stops)."""
    if world.size == 1:
        return
    theirs = world.bcast_json(settings)
    mine = json.loads(json.dumps(settings, sort_keys=True))
    for key in sorted(set(theirs) | set(mine)):
        if theirs.get(key) != mine.get(key):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"this rank was started with {flag} {mine.get(key)!r} but rank 0 "
                              f"with {theirs.get(key)!r}: every rank of mpiexec must get the "
                              "same settings")


def agreed(world, error):
    """For an exception that every rank raises at the same point, from the same all-reduced
    numbers (a nan loss): the ranks stop together without an abort, and only rank 0 says why.
    Returns the exception to raise: error (marked) on rank 0, a PeerFailed elsewhere."""
    if world.size > 1 and not world.is_root:
        return PeerFailed(f"rank 0 stopped: {error}")
    error.agreed = True
    return error


@contextlib.contextmanager
def abort_on_error(world, command="numpygpt"):
    """Around work that other ranks wait on (the training loop): an exception on one rank
    prints its one-line message (a UserError) or its traceback (a bug), naming the rank, then
    ends the whole job with MPI_Abort. A PeerFailed (all ranks agreed, see `together`) and
    every exception in a SingleProcess pass through unchanged, as does one that every rank
    raises together (marked by `together` or `agreed`)."""
    if world.size == 1:
        yield
        return
    try:
        yield
    except BaseException as e:
        if getattr(e, "agreed", False):
            raise
        where = f"{command}{rank_label()}"
        debug = os.environ.get("NUMPYGPT_DEBUG", "").strip() not in ("", "0")
        if isinstance(e, KeyboardInterrupt):
            print(f"{where}: interrupted", file=sys.stderr)
        elif type(e).__module__.startswith("mpi4py"):  # MPI itself failed: not our bug
            print(f"{where}: error: the communication with the other ranks failed (did one "
                  f"of them die?): {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                  file=sys.stderr)
        elif isinstance(e, UserError) and not debug:
            print(f"{where}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        else:
            print(f"{where}: {type(e).__name__}:", file=sys.stderr)
            traceback.print_exc()
        world.abort(1)
