"""Many generation requests sampled together: one model step per token for all their samples at once.

A worker thread owns the model. Requests wait in a bounded queue; between two steps the worker
admits those that fit in the batch (warming each one's state on its seed), so a request that
arrives while others are running joins them at the next token. Every step then
  1. draws the next token of every sample, one draw per group of requests with the same
     decoding options (temperature, top-k, top-p, repetition penalty),
  2. feeds all the new tokens through the model in one call, their states joined along the batch.
Each request keeps its own Decoding (rnngen.generate.sample): its random generators (sample i of a request
with random seed s draws only from generator s + i), the tokens it has seen and its stop texts. So
its text is the one `rnngen sample` writes with the same options, whoever else shares the batch.

The worker hands what happened at each step (new text, finished samples, errors) to a `deliver`
callback, once per step; rnngen.serve.service passes them on to the waiting HTTP requests.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rnngen import console
from rnngen.data.vocab import Vocab
from rnngen.generate.sample import Decoding, ModelSteps, choose, final_probs
from rnngen.models.state import join_streams, select_streams


class QueueFull(Exception):
    """The batch is full and the queue holds as many waiting requests as allowed."""


@dataclass(eq=False)
class Job:
    """One request: what to generate, by when, and what the client wants to hear about."""

    decoding: Decoding
    seed_ids: list[int]
    deadline: float  # time.monotonic() after which the request has failed
    stream: bool = False  # report every token, not only the end
    explain: int = 0  # with each token, this many top candidates and their probabilities
    inbox: object = None  # for the caller: where its events go
    cancelled: bool = False  # set by the caller when the client has gone
    # the worker's own, while the job runs:
    logits: torch.Tensor | None = None  # (N, V) scores of each sample's next token
    state: object = None
    next_ids: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return len(self.decoding.samples)

    @property
    def key(self) -> tuple:
        o = self.decoding.options
        return (o.temperature, o.top_k, o.top_p, o.repetition_penalty)


Event = tuple[Job, str, dict]  # (job, "token" | "text" | "done" | "error", data)
TIMEOUT = {"error": "the request ran past the server's time limit; ask for fewer tokens or try later", "status": 504}


@dataclass
class Batcher:
    """The worker thread and its queue. `submit` is called from any thread; `deliver` from the worker."""

    model: torch.nn.Module
    vocab: Vocab
    device: torch.device
    deliver: Callable[[list[Event]], None]
    max_batch: int = 64  # samples generated together at most
    queue_size: int = 64  # requests that may wait when the batch is full
    precision: str = "fp32"  # of the weights (sample.precision): one for the whole server
    pending: collections.deque = field(default_factory=collections.deque)
    active: list[Job] = field(default_factory=list)
    active_rows: int = 0
    waiting_rows: int = 0

    def __post_init__(self):
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rnngen-batcher", daemon=True)
        self._steps = ModelSteps(self.model, self.device, self.precision)
        self._threads = torch.get_num_threads()

    # ----------------------------------------------------------------------- from other threads

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull when it can neither start at once nor wait in the queue."""
        if job.decoding.generators is None:
            raise ValueError("a batched job needs a random_seed: its samples draw from their own generators")
        with self._lock:
            fits = self.active_rows + self.waiting_rows + job.rows <= self.max_batch
            if self._stopping or not (fits or len(self.pending) < self.queue_size):
                raise QueueFull
            self.pending.append(job)
            self.waiting_rows += job.rows
            self._lock.notify()

    def load(self) -> dict:
        with self._lock:
            return {"running": len(self.active), "queued": len(self.pending), "batch_rows": self.active_rows}

    # ----------------------------------------------------------------------- the worker

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                admitted = self._admit()
                if admitted is None:
                    break
                events: list[Event] = []
                try:
                    for job in admitted:
                        self._warm(job)
                    self._set_threads()
                    self._step(events)
                except Exception as e:  # noqa: BLE001 - one bad step must not take the server down
                    console.warn(f"generation failed: {e}\n{traceback.format_exc()}")
                    for job in self.active:
                        events.append((job, "error", {"error": f"generation failed: {e}", "status": 500}))
                    self._retire(list(self.active))
                if events:
                    self.deliver(events)
        self._fail_all("the server is shutting down")

    def _admit(self) -> list[Job] | None:
        """Wait for work; move the waiting jobs that fit into the batch. None when stopping."""
        with self._lock:
            while not self.pending and not self.active and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            admitted = []
            while self.pending and self.active_rows + self.pending[0].rows <= self.max_batch:
                job = self.pending.popleft()
                self.waiting_rows -= job.rows
                self.active_rows += job.rows
                admitted.append(job)
            return admitted

    def _warm(self, job: Job) -> None:
        self.active.append(job)
        self.active.sort(key=lambda j: j.key)  # groups of equal options side by side
        job.logits, job.state = self._steps.warm(job.seed_ids, job.rows)
        job.decoding.started = time.monotonic()

    def _set_threads(self) -> None:
        """One sample alone runs on one thread, as `rnngen sample` does: its matrices are too small to share."""
        wanted = 1 if self.active_rows == 1 and self._steps.stepper is not None else self._threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _retire(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.active.remove(job)
        with self._lock:
            self.active_rows -= sum(job.rows for job in jobs)

    def _step(self, events: list[Event]) -> None:
        """Expire the jobs past their deadline, draw one token for every sample, run the model once."""
        self._expire_waiting(events)
        now = time.monotonic()
        over = [j for j in self.active if j.cancelled or now > j.deadline]
        events += [(j, "error", TIMEOUT) for j in over if not j.cancelled]
        self._retire(over)
        self._finish([j for j in self.active if not j.decoding.more() or j.decoding.out_of_time()], events)
        for group in _groups(self.active):
            self._draw(group, events)
        self._finish([j for j in self.active if not j.decoding.more()], events)
        if not self.active:
            return
        ids = torch.cat([j.next_ids for j in self.active])  # (R,)
        logits, state = self._steps.step(ids, join_streams([j.state for j in self.active]))
        start = 0
        for job in self.active:
            rows = slice(start, start + job.rows)
            job.logits, job.state = logits[rows], select_streams(state, rows)
            start += job.rows

    def _draw(self, group: list[Job], events: list[Event]) -> None:
        """One token for every sample of a group of jobs with the same options, in one draw."""
        options = group[0].decoding.options
        logits = torch.cat([j.logits for j in group])
        seen = torch.cat([j.decoding.seen for j in group]) if options.repetition_penalty != 1.0 else None
        generators = [g for j in group for g in j.decoding.generators]
        next_ids, logprobs, penalised = choose(logits, seen, options, generators)
        id_list, logprob_list = next_ids.tolist(), logprobs.tolist()
        start = 0
        for job in group:
            rows = slice(start, start + job.rows)
            start += job.rows
            job.next_ids = next_ids[rows]
            before = [s.tokens for s in job.decoding.samples]
            pieces = job.decoding.record(id_list[rows], logprob_list[rows])
            if not job.stream:
                continue
            explained = _explain(logits[rows], penalised[rows], next_ids[rows], options, job.explain)
            for i, (sample, piece) in enumerate(zip(job.decoding.samples, pieces)):
                if sample.tokens > before[i]:
                    token_id = sample.ids[-1]
                    data = {"sample": i, "text": piece, "token": self.vocab.tokens[token_id], "id": token_id}
                    if job.explain:
                        data["candidates"] = [
                            {"token": self.vocab.tokens[t], "id": t, "raw": raw, "final": final}
                            for t, raw, final in explained[i]
                        ]
                    events.append((job, "token", data))

    def _finish(self, jobs: list[Job], events: list[Event]) -> None:
        for job in jobs:
            for i, rest in enumerate(job.decoding.finish()):
                if rest and job.stream:
                    events.append((job, "text", {"sample": i, "text": rest}))
            if not job.cancelled:
                events.append((job, "done", {"samples": job.decoding.samples}))
        self._retire(jobs)

    def _expire_waiting(self, events: list[Event]) -> None:
        now = time.monotonic()
        with self._lock:
            late = [j for j in self.pending if j.cancelled or now > j.deadline]
            for job in late:
                self.pending.remove(job)
                self.waiting_rows -= job.rows
        events += [(j, "error", TIMEOUT) for j in late if not j.cancelled]

    def _fail_all(self, message: str) -> None:
        with self._lock:
            jobs = list(self.pending) + self.active
            self.pending.clear()
        if jobs:
            self.deliver([(job, "error", {"error": message, "status": 503}) for job in jobs])


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Runs of jobs with the same decoding options (the list is kept sorted by them)."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups and groups[-1][0].key == job.key:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def _explain(logits, penalised, chosen, options, k: int) -> list[list[tuple[int, float, float]]]:
    """Per row: the k tokens the model finds most likely (and the one drawn, if not among them), each with
    its probability under the model's own softmax and under the distribution actually drawn from
    (after repetition penalty, temperature, top-k and top-p). Empty rows when k is 0."""
    if not k:
        return [[] for _ in range(len(logits))]
    raw = torch.softmax(logits.float(), dim=-1)
    final = final_probs(penalised, options)
    top = raw.topk(min(k, raw.size(-1)), dim=-1).indices  # (N, k)
    rows = []
    for ids, drawn, raw_row, final_row in zip(top.tolist(), chosen.tolist(), raw, final):
        ids = ids if drawn in ids else ids + [drawn]
        rows.append(
            [(t, round(r, 6), round(f, 6)) for t, r, f in zip(ids, raw_row[ids].tolist(), final_row[ids].tolist())]
        )
    return rows
