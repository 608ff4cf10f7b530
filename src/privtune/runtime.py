"""Where and how models run: the device, the compute dtype, and the number of CPU threads.

One place for these choices, so train, eval, serve and merge agree. torch is imported inside the
functions: the CLI imports this module for commands that never touch a model.

- Device: cuda if there is one, then Apple's mps, else the CPU.
- Dtype: on an accelerator the model's own dtype (what it was trained and shipped in, half the
  memory of fp32 for bf16/fp16 models). On a CPU, bf16/fp16 weights are computed in float32: half
  precision matmuls there are slow, and bf16 generation drifts from what the model does in fp32.
  Saving is another matter: a merged model is written in its base's own dtype (models/merge.py).
- Threads: one torch thread per physical core this process may use (affinity mask and cgroup
  quota respected), at most MAX_THREADS. Hyper-threads share a core's arithmetic units, so a
  second thread per core only adds contention, and `os.cpu_count()` counts them and ignores the
  affinity mask and container CPU limits. `--set threads=N` (train) and the PRIVTUNE_THREADS
  variable (every stage) override it. More than one thread needs idle OpenMP threads to sleep
  on a shared machine (`openmp_defaults`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

from privtune.errors import PrivtuneError

CPUINFO = Path("/proc/cpuinfo")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
PROC_STAT = Path("/proc/stat")
MAX_THREADS = 4
"""The cap the README documents; not re-measured above 2 cores. `threads`/PRIVTUNE_THREADS lift it."""
THREADS_ENV = "PRIVTUNE_THREADS"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def allowed_cpus() -> set[int] | None:
    """Logical CPUs this process may run on (taskset, cpusets); None where the OS cannot say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def physical_cores(cpuinfo: str | None = None, allowed: set[int] | None = None) -> int:
    """Distinct (physical id, core id) pairs among the allowed processors of /proc/cpuinfo.

    Where cpuinfo has no topology (not Linux, some VMs and ARM boards), every allowed logical CPU
    counts as a core: better too many threads than one on a machine we cannot read.
    """
    text = _read(CPUINFO) if cpuinfo is None else cpuinfo
    allowed = allowed_cpus() if allowed is None else allowed
    logical = len(allowed) if allowed else (os.cpu_count() or 1)
    cores = set()
    for block in text.split("\n\n"):
        fields = {key.strip(): value.strip() for key, value in
                  (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        processor = fields.get("processor", "")
        if not processor.isdigit() or (allowed is not None and int(processor) not in allowed):
            continue
        if "physical id" not in fields or "core id" not in fields:
            return logical
        cores.add((fields["physical id"], fields["core id"]))
    return len(cores) or logical


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX): there, bf16 autocast trains ~1.5x
    faster than fp32 (benchmarks/bench_train_real.py); elsewhere it is emulated and slower."""
    text = _read(CPUINFO) if cpuinfo is None else cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_quota(cpu_max: str | None = None) -> int | None:
    """CPUs a cgroup v2 quota allows (`docker --cpus=2` on a 64-core host), rounded up; None if unlimited."""
    fields = (_read(CGROUP_CPU_MAX) if cpu_max is None else cpu_max).split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        return max(1, math.ceil(int(fields[0]) / int(fields[1])))
    except (ValueError, ZeroDivisionError):
        return None


def openmp_defaults() -> None:
    """Let idle OpenMP threads sleep instead of spin; only takes effect before torch is imported.

    libgomp's threads spin between parallel regions by default. When other processes share the
    cores, a spinning thread holds a core the descheduled one needs: on a busy 2-core box, 2
    spin-waiting threads ran 5-300x slower than 1 thread (tiny model and SmolLM2-135M), and about
    as fast as 1 thread with OMP_WAIT_POLICY=PASSIVE (benchmarks/bench_threads.py). The price, on
    an idle box: tiny-model generation (many very small ops) runs up to ~4x slower than spinning;
    large matmuls do not notice. An explicit setting is left alone.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine_busy_seconds(stat: str | None = None) -> float | None:
    """CPU seconds every process on the machine has run since boot (a hypervisor's steal counted as
    busy: the core was not ours), from /proc/stat; None where there is none (not Linux)."""
    first = (_read(PROC_STAT) if stat is None else stat).split("\n", 1)[0].split()
    if len(first) < 9 or first[0] != "cpu" or not all(f.isdigit() for f in first[1:9]):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes kept busy since the last reading: the machine's busy time less
    this process's own (all its threads, spinning included)."""

    def __init__(self, busy=None, clock=None):
        import time

        self._busy = busy or machine_busy_seconds
        self._clock = clock or (lambda: (time.monotonic(), sum(os.times()[:2])))
        self._last = self._sample()

    def _sample(self):
        return self._busy(), *self._clock()

    def cores(self) -> float | None:
        """Other processes' cores since the last call (or since created); None if the machine cannot say."""
        now = self._sample()
        (busy0, wall0, mine0), self._last = self._last, now
        if now[0] is None or busy0 is None or now[1] <= wall0:
            return None
        return max(0.0, ((now[0] - busy0) - (now[2] - mine0)) / (now[1] - wall0))

    @classmethod
    def visible(cls) -> bool:
        return machine_busy_seconds() is not None


class ThreadsFollower:
    """Use the cores that other processes leave free, re-read at each `follow` (a training step, an
    evaluation batch, a generated token).

    On Linux, train and eval let libgomp's idle threads spin: on an idle 2-core box, 2 spinning threads
    trained the demo model 1.7x faster than 1 thread (2.1 s a step against 3.6), while 2 sleeping threads
    (OMP_WAIT_POLICY=PASSIVE) gained little. But 2 spinning threads beside another busy process took
    over 20 s a step, against 3.5 s on 1 thread (README, "CPU threads"). So the thread count drops as
    soon as other processes keep a core busy between two readings, and comes back after `quiet_steps`
    quiet readings in a row.

    A reading spans at least `min_seconds`: the kernel counts busy time in 10 ms ticks per core, so over
    one generated token (~60 ms) the other processes' share is off by up to ~0.7 of a core, and an idle
    machine looked busy every few dozen tokens (eval dropped to 1 thread 7 times in one run). Over 0.5 s
    the error is under 0.1 of a core.
    """

    def __init__(self, full: int, cpus: int, load=None, quiet_steps: int = 3, min_seconds: float = 0.5,
                 clock=None):
        import time

        self.full, self.cpus, self.quiet_steps, self.min_seconds = full, cpus, quiet_steps, min_seconds
        self.load = load or OtherLoad()
        self.clock = clock or time.monotonic
        self.read_at = self.clock()
        self.quiet = 0
        self.changes: list[tuple[int, int]] = []  # (step, threads)

    def start(self, probe_seconds: float = 0.25) -> int:
        """The thread count to begin with, from the other processes' load over `probe_seconds`."""
        import time

        import torch

        time.sleep(probe_seconds)
        threads = threads_for_load(self.full, self.load.cores(), self.cpus)
        self.read_at = self.clock()
        torch.set_num_threads(threads)
        return threads

    def follow(self, step: int) -> None:
        import torch

        now = self.clock()
        if now - self.read_at < self.min_seconds:
            return  # too soon to tell: the next reading covers this stretch too
        self.read_at = now
        wanted, current = threads_for_load(self.full, self.load.cores(), self.cpus), torch.get_num_threads()
        if wanted == current:
            self.quiet = 0
            return
        if wanted > current:  # more cores free: only after quiet_steps such readings in a row
            self.quiet += 1
            if self.quiet < self.quiet_steps:
                return
        self.quiet = 0
        torch.set_num_threads(wanted)
        self.changes.append((step, wanted))


def follows_load(threads: int = 0) -> bool:
    """Whether privtune picks the thread count itself on a CPU and can see the machine's load (Linux)."""
    import torch

    return not (threads or threads_from_env() or torch.cuda.is_available() or not OtherLoad.visible())


def start_following_load(threads: int = 0, kind: type = ThreadsFollower) -> ThreadsFollower | None:
    """A started `kind` (ThreadsFollower or a subclass: train's callback) when `follows_load(threads)`, else
    None (the thread count stays as set)."""
    if not follows_load(threads):
        return None
    follower = kind(choose_threads(), usable_cpus())
    follower.start()
    return follower


def usable_cpus() -> int:
    """Logical CPUs this process may run on, within its cgroup quota."""
    allowed = allowed_cpus()
    cpus = len(allowed) if allowed else (os.cpu_count() or 1)
    return min(cpus, cpu_quota() or cpus)


def threads_for_load(full: int, others: float | None, cpus: int) -> int:
    """Threads to use while other processes keep `others` of our `cpus` busy: those left free, 1 to `full`."""
    if others is None:
        return full
    return max(1, min(full, round(cpus - others)))


def threads_from_env() -> int:
    """PRIVTUNE_THREADS as a positive int; 0 when unset or empty (choose automatically)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) < 1:
        raise PrivtuneError(f"{THREADS_ENV} must be a positive whole number, got '{value}'", field=THREADS_ENV)
    return int(value)


def choose_threads(override: int = 0) -> int:
    """`override` if set, else one thread per usable physical core, capped at MAX_THREADS."""
    if override:
        return override
    usable = physical_cores()
    quota = cpu_quota()
    return max(1, min(MAX_THREADS, usable, quota or usable))


def apply_threads(override: int = 0) -> int:
    """Set torch's intra-op threads (recipe value, else PRIVTUNE_THREADS, else automatic); returns the count.

    torch's default can oversubscribe a shared or hyper-threaded CPU: on a busy 2-core box it ran
    many times slower than one thread per core (STACK.md).
    """
    import torch

    threads = choose_threads(override or threads_from_env())
    torch.set_num_threads(threads)
    return threads


def best_device() -> str:
    """cuda if available, then mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def saved_dtype(model_config) -> "torch.dtype":
    """The dtype a model's config says its weights are stored in; float32 when it says nothing."""
    import torch

    value = getattr(model_config, "dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def compute_dtype(stored: "torch.dtype", device: str) -> "torch.dtype":
    """The model's own dtype on an accelerator; float32 instead of bf16/fp16 on a CPU."""
    import torch

    if device == "cpu" and stored in (torch.bfloat16, torch.float16):
        return torch.float32
    return stored


@contextmanager
def environment(**values: str):
    """Environment variables set for one call and put back after it (removed if they were unset), so a
    setting one run needs never outlives it."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
