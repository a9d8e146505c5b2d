"""The NVML provider, with pynvml's functions patched: values, per-GPU errors, missing library."""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from apps.gpu import providers
from apps.gpu.providers import NvmlProvider, ProviderUnavailable, get_provider

MiB = 2**20


@pytest.fixture
def two_gpus(monkeypatch):
    """GPU 0 reads fully; GPU 1 has no power sensor and no process list permission."""
    calls = {"init": 0, "shutdown": 0}
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.__setitem__("init", calls["init"] + 1))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: f"h{i}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: {"h0": b"NVIDIA A100-SXM4-40GB", "h1": "NVIDIA L4"}[h])
    mem = {
        "h0": SimpleNamespace(total=40960 * MiB, used=30720 * MiB, free=10240 * MiB),
        "h1": SimpleNamespace(total=23034 * MiB, used=1024 * MiB, free=22010 * MiB),
    }
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: mem[h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", lambda h, sensor: {"h0": 71, "h1": 45}[h])

    def power(h):
        if h == "h1":
            raise pynvml.NVMLError_NotSupported()
        return 312_500  # milliwatts

    def procs(h):
        if h == "h1":
            raise pynvml.NVMLError_NoPermission()
        return [SimpleNamespace(pid=4242, usedGpuMemory=20480 * MiB), SimpleNamespace(pid=4343, usedGpuMemory=None)]

    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", power)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=87, memory=40))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", procs)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: f"GPU-{h}")
    return calls


def test_every_gpu_is_read_with_memory_temperature_power_utilization_and_processes(two_gpus):
    gpu0, gpu1 = NvmlProvider().sample()
    assert (gpu0.index, gpu0.name, gpu0.uuid) == (0, "NVIDIA A100-SXM4-40GB", "GPU-h0")
    assert (gpu0.memory_total_mb, gpu0.memory_used_mb, gpu0.memory_free_mb) == (40960, 30720, 10240)
    assert gpu0.memory_percent == pytest.approx(75.0)
    assert (gpu0.temperature_c, gpu0.power_w, gpu0.utilization_percent) == (71.0, 312.5, 87.0)
    assert gpu0.processes == [{"pid": 4242, "used_mb": 20480}, {"pid": 4343, "used_mb": 0}]
    assert gpu0.simulated is False
    assert gpu1.name == "NVIDIA L4"


def test_a_reading_the_board_cannot_give_is_none_not_a_failure(two_gpus):
    gpu1 = NvmlProvider().sample()[1]
    assert gpu1.power_w is None and gpu1.processes == []
    assert gpu1.temperature_c == 45.0 and gpu1.memory_used_mb == 1024


def test_a_lost_gpu_is_reported_without_stopping_the_others(two_gpus, monkeypatch):
    real = pynvml.nvmlDeviceGetMemoryInfo

    def lost(h):
        if h == "h0":
            raise pynvml.NVMLError_GpuIsLost()
        return real(h)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lost)
    gpu0, gpu1 = NvmlProvider().sample()
    assert "unreadable" in gpu0.name and gpu0.memory_total_mb == 0
    assert gpu1.memory_total_mb == 23034


def test_close_shuts_nvml_down(two_gpus):
    provider = NvmlProvider()
    provider.close()
    assert two_gpus == {"init": 1, "shutdown": 1}


def _no_library() -> None:
    raise pynvml.NVMLError_LibraryNotFound()


def test_auto_falls_back_to_the_simulated_provider_without_nvml(monkeypatch, settings):
    monkeypatch.setattr(pynvml, "nvmlInit", _no_library)
    provider = get_provider("auto")
    assert isinstance(provider, providers.SimulatedProvider) and provider.simulated


def test_nvml_required_explicitly_fails_loudly_without_the_library(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlInit", _no_library)
    with pytest.raises(ProviderUnavailable, match="NVML did not initialize"):
        get_provider("nvml")


def test_auto_uses_nvml_when_it_initializes(two_gpus):
    assert isinstance(get_provider("auto"), NvmlProvider)


def test_none_provider_reports_no_gpus():
    assert get_provider("none").sample() == []
