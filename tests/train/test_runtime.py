"""privtune.runtime: threads from physical cores (affinity and quotas respected), dtype by device."""

import pytest
import torch

from privtune import runtime
from privtune.errors import PrivtuneError
from privtune.train import stage as sft
from tests.conftest import train_config


def cpuinfo(*cpus: tuple[int, int, int]) -> str:
    """/proc/cpuinfo text for (processor, physical id, core id) triples, in the kernel's layout."""
    return "\n".join(f"processor\t: {p}\nvendor_id\t: GenuineIntel\nphysical id\t: {s}\nsiblings\t: 2\n"
                     f"core id\t\t: {c}\ncpu cores\t: 2\nflags\t\t: fpu vme sse2 ht\n" for p, s, c in cpus)


TWO_CORES = cpuinfo((0, 0, 0), (1, 0, 1))
TWO_CORES_HT = cpuinfo((0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 0, 1))  # Linux numbers siblings after all cores
TWO_SOCKETS_HT = cpuinfo(*[(p, p // 2 % 2, p % 2) for p in range(8)])  # 2 sockets x 2 cores x 2 threads


@pytest.mark.parametrize("text, allowed, cores", [
    (TWO_CORES, {0, 1}, 2),
    (TWO_CORES_HT, {0, 1, 2, 3}, 2),
    (TWO_SOCKETS_HT, set(range(8)), 4),
    (TWO_CORES_HT, {0, 2}, 1),  # taskset to the two hyper-threads of one core
    (TWO_CORES_HT, {0, 1}, 2),
    ("processor\t: 0\nBogoMIPS\t: 48.00\n\nprocessor\t: 1\nBogoMIPS\t: 48.00\n", {0, 1}, 2),  # ARM: no topology
    ("", {0, 1, 2}, 3),  # unreadable: the allowed logical CPUs
])
def test_physical_cores(text, allowed, cores):
    assert runtime.physical_cores(text, allowed) == cores


def test_this_machine_has_at_least_one_core_and_at_most_the_logical_count():
    import os

    assert 1 <= runtime.physical_cores() <= os.cpu_count()


@pytest.mark.parametrize("text, cpus", [("200000 100000\n", 2), ("150000 100000", 2), ("max 100000", None),
                                        ("", None), ("garbage", None)])
def test_cgroup_cpu_quota(text, cpus):
    assert runtime.cpu_quota(text) == cpus


def test_choose_threads_caps_and_respects_quota_and_override(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_quota", lambda: None)
    monkeypatch.setattr(runtime, "physical_cores", lambda: 16)
    assert runtime.choose_threads() == runtime.MAX_THREADS
    assert runtime.choose_threads(12) == 12
    monkeypatch.setattr(runtime, "physical_cores", lambda: 2)
    assert runtime.choose_threads() == 2  # the old cpu_count // 2 gave 1 on a 2-core box without HT
    monkeypatch.setattr(runtime, "cpu_quota", lambda: 1)
    assert runtime.choose_threads() == 1


def test_env_variable_sets_threads_and_bad_values_are_named(monkeypatch, restore_threads):
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.apply_threads() == 3 and torch.get_num_threads() == 3
    assert runtime.apply_threads(1) == 1  # the recipe's `threads` wins over the variable
    monkeypatch.setenv(runtime.THREADS_ENV, "two")
    with pytest.raises(PrivtuneError) as info:
        runtime.apply_threads()
    assert info.value.field == runtime.THREADS_ENV


def test_train_uses_one_thread_per_physical_core(tickets_dataset, tiny_model, workspace, monkeypatch,
                                                 restore_threads):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime, "physical_cores", lambda: 2)
    monkeypatch.setattr(runtime, "cpu_quota", lambda: None)
    torch.set_num_threads(1)

    def stop(*args, **kwargs):  # the thread count is set by now; no need to train at 2 threads on a busy box
        raise RuntimeError("stop here")

    monkeypatch.setattr(sft, "load_model", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        sft.run(str(tickets_dataset.path), str(tiny_model), train_config("lora", threads=0), workspace)
    assert torch.get_num_threads() == 2


def test_dtype_rule():
    assert runtime.compute_dtype(torch.bfloat16, "cpu") == torch.float32
    assert runtime.compute_dtype(torch.float16, "cpu") == torch.float32
    assert runtime.compute_dtype(torch.bfloat16, "cuda") == torch.bfloat16
    assert runtime.compute_dtype(torch.float16, "mps") == torch.float16
    assert runtime.compute_dtype(torch.float32, "cuda") == torch.float32

    class Config:
        pass

    config = Config()
    assert runtime.saved_dtype(config) == torch.float32  # says nothing: float32, as from_pretrained assumes
    config.dtype = "bfloat16"
    assert runtime.saved_dtype(config) == torch.bfloat16
    config.dtype = torch.float16
    assert runtime.saved_dtype(config) == torch.float16


def test_privtune_lets_openmp_threads_sleep_unless_told_otherwise(tickets_dataset, workspace, cli, monkeypatch):
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # recorded, so the test leaves the environment as it was
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(runtime.OtherLoad, "visible", classmethod(lambda cls: False))  # eval cannot follow the load
    args = ("eval", "--model", "x", "--data", tickets_dataset.path, "--set", "batch_size=-1", "--workspace",
            workspace.root)
    assert cli(*args)[0] == 2  # stops at the settings, before any torch work
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli(*args)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("load_visible, policy", [(True, None), (False, "PASSIVE")])
@pytest.mark.parametrize("command, bad", [("train", "learning_rate=-1"), ("eval", "batch_size=-1")])
def test_privtune_train_and_eval_spin_only_where_they_can_follow_the_load(load_visible, policy, command, bad,
                                                                          tickets_dataset, workspace, cli,
                                                                          monkeypatch):
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(runtime.OtherLoad, "visible", classmethod(lambda cls: load_visible))
    args = (command, "--data", tickets_dataset.path, "--set", bad, "--workspace", workspace.root)
    assert cli(*args, "--model", "x")[0] == 2  # stops at the settings, before any torch work
    assert os.environ.get("OMP_WAIT_POLICY") == policy


def test_privtune_serve_keeps_openmp_spinning(cli, monkeypatch):
    """A server owns its cores: its batched decode needs libgomp's spinning default."""
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert cli("serve", "no-such-model", "--port", "0")[0] == 2  # stops at the port, before loading anything
    assert "OMP_WAIT_POLICY" not in os.environ


def test_the_wait_policy_is_set_before_torch_is_imported(tmp_path):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads it: later is too late."""
    import subprocess
    import sys

    code = ("import sys\nfrom privtune import runtime\nseen = []\n"
            "runtime.openmp_defaults = lambda: seen.append('torch' in sys.modules)\n"
            "from typer.testing import CliRunner\nfrom privtune.cli import app\n"
            f"CliRunner().invoke(app, ['prep', '--data', 'x', '--model', 'x', '--workspace', {str(tmp_path)!r}])\n"
            "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[False]", out.stderr[-2000:]


def test_machine_busy_seconds_reads_proc_stat():
    import os

    tick = os.sysconf("SC_CLK_TCK")
    stat = f"cpu  {tick} 0 {tick} 900 7 0 0 {tick} 0 0\ncpu0 1 0 1 450 0 0 0 0 0 0\n"
    assert runtime.machine_busy_seconds(stat) == pytest.approx(3.0)  # user + system + steal; idle, iowait not
    assert runtime.machine_busy_seconds("") is None and runtime.machine_busy_seconds("intr 1 2\n") is None
    assert runtime.OtherLoad.visible() == (runtime.machine_busy_seconds() is not None)


def test_other_load_is_the_machine_busy_time_less_ours():
    readings = iter([(100.0, 0.0, 5.0), (103.0, 2.0, 7.0), (104.0, 3.0, 9.0), (None, 4.0, 9.0)])
    now = {}

    def busy():
        now["reading"] = next(readings)
        return now["reading"][0]

    load = runtime.OtherLoad(busy=busy, clock=lambda: now["reading"][1:])
    assert load.cores() == pytest.approx(0.5)  # 3 busy seconds in 2 s, 2 of them ours
    assert load.cores() == 0.0  # ours alone (never below 0)
    assert load.cores() is None  # the machine stopped saying


@pytest.mark.parametrize("others, threads", [(None, 2), (0.0, 2), (0.3, 2), (0.7, 1), (1.9, 1), (0.0, 2)])
def test_threads_for_load_leaves_other_processes_their_cores(others, threads):
    assert runtime.threads_for_load(2, others, cpus=2) == threads


def test_threads_for_load_counts_idle_cpus_beyond_the_cap():
    assert runtime.threads_for_load(4, 3.0, cpus=16) == 4  # 13 idle CPUs: still the capped 4
    assert runtime.threads_for_load(4, 14.0, cpus=16) == 2


def test_threads_follow_the_load_down_at_once_and_up_after_quiet_steps(restore_threads):
    from privtune.train.callbacks import ThreadsFollowLoad

    class Load:
        def __init__(self, values):
            self.values = iter(values)

        def cores(self):
            return next(self.values)

    follow = ThreadsFollowLoad(2, 2, load=Load([0.1, 0.2, 1.0, 0.0, 0.0, 1.2, 0.0, 0.0, 0.0, 0.1]), quiet_steps=3,
                              min_seconds=0)
    assert follow.start(probe_seconds=0) == 2 and torch.get_num_threads() == 2
    seen = []
    for step in range(1, 10):
        follow.follow(step)
        seen.append(torch.get_num_threads())
    assert seen == [2, 1, 1, 1, 1, 1, 1, 2, 2]  # down at once; up after 3 quiet steps in a row (a busy one resets)
    assert follow.changes == [(2, 1), (8, 2)]


def test_a_reading_spans_at_least_min_seconds(restore_threads):
    """Readings closer than min_seconds are skipped, so the next one covers the whole stretch: the 10 ms ticks
    the kernel counts busy time in cannot make an idle machine look busy over one short step."""
    class Load:
        readings = 0

        def cores(self):
            self.readings += 1
            return 1.0

    clock = {"now": 0.0}
    follower = runtime.ThreadsFollower(2, 2, load=Load(), min_seconds=0.5, clock=lambda: clock["now"])
    torch.set_num_threads(2)
    for step, now in enumerate([0.1, 0.2, 0.3, 0.45, 0.55, 0.6, 0.9, 1.06], start=1):
        clock["now"] = now
        follower.follow(step)
    assert follower.load.readings == 2 and follower.changes == [(5, 1)]  # read at 0.55 s and 1.06 s only


def test_train_follows_the_load_only_when_privtune_picks_the_threads(monkeypatch, restore_threads):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime.OtherLoad, "visible", classmethod(lambda cls: True))
    monkeypatch.setattr(runtime, "choose_threads", lambda override=0: override or 2)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 2)
    monkeypatch.setattr(runtime, "machine_busy_seconds", lambda: 0.0)  # nothing else runs
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    [follow] = sft.threads_following_load(train_config("lora", threads=0))
    assert follow.full == 2 and torch.get_num_threads() in (1, 2)
    assert sft.threads_following_load(train_config("lora", threads=1)) == []
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    assert sft.threads_following_load(train_config("lora", threads=0)) == []
    monkeypatch.delenv(runtime.THREADS_ENV)
    monkeypatch.setattr(runtime.OtherLoad, "visible", classmethod(lambda cls: False))
    assert sft.threads_following_load(train_config("lora", threads=0)) == []


def test_cpu_has_bf16_reads_the_flags():
    assert runtime.cpu_has_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert runtime.cpu_has_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not runtime.cpu_has_bf16("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not runtime.cpu_has_bf16("")
