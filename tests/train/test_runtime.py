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


@pytest.fixture()
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


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


def test_privtune_train_lets_openmp_threads_sleep_unless_told_otherwise(tickets_dataset, workspace, cli,
                                                                       monkeypatch):
    import os

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # recorded, so the test leaves the environment as it was
    monkeypatch.delenv("OMP_WAIT_POLICY")
    args = ("train", "--data", tickets_dataset.path, "--set", "learning_rate=-1", "--workspace", workspace.root)
    assert cli(*args, "--model", "x")[0] == 2  # stops at the recipe, before any torch work
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli(*args, "--model", "x")
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


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
            f"CliRunner().invoke(app, ['train', '--data', 'x', '--model', 'x', '--workspace', {str(tmp_path)!r}])\n"
            "print(seen)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[False]", out.stderr[-2000:]
