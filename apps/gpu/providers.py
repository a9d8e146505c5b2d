"""GPU providers: what the monitor samples. NVML (``pynvml``) on real hardware, a simulated GPU
elsewhere (clearly labelled: every reading carries ``simulated``).

``MEDAI_GPU_PROVIDER``: ``auto`` (NVML when it initializes, else simulated), ``nvml``,
``simulated`` or ``none`` (no GPU data: the policy stays at its lowest level).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from apps.gpu import slots
from apps.gpu.models import ModelServer, SimulatedGpu

logger = logging.getLogger("medai.gpu")


@dataclass
class GpuReading:
    index: int
    name: str
    memory_total_mb: int
    memory_used_mb: int
    temperature_c: float | None = None
    power_w: float | None = None
    utilization_percent: float | None = None
    processes: list[dict[str, int]] = field(default_factory=list)  # [{"pid", "used_mb"}]
    simulated: bool = False
    uuid: str = ""

    @property
    def memory_free_mb(self) -> int:
        return max(self.memory_total_mb - self.memory_used_mb, 0)

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_mb / self.memory_total_mb if self.memory_total_mb else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_free_mb"] = self.memory_free_mb
        data["memory_percent"] = round(self.memory_percent, 2)
        return data


class Provider(Protocol):
    name: str
    simulated: bool

    def sample(self) -> list[GpuReading]: ...

    def close(self) -> None: ...


class ProviderUnavailable(RuntimeError):
    pass


class NvmlProvider:
    """Every GPU NVML sees. A reading that one GPU cannot give (e.g. power on some boards) is None;
    a GPU that is lost is reported without memory rather than stopping the monitor."""

    name = "nvml"
    simulated = False

    def __init__(self) -> None:
        # Imported here: the NVML bindings are needed only where a GPU is used (``auto`` falls
        # back to the simulated provider when they cannot be imported).
        import pynvml

        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise ProviderUnavailable(f"NVML did not initialize: {exc}") from None

    def _optional(self, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except self._nvml.NVMLError:
            return None

    def sample(self) -> list[GpuReading]:
        nv = self._nvml
        readings = []
        for index in range(nv.nvmlDeviceGetCount()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                name = nv.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
            except nv.NVMLError as exc:
                logger.warning("GPU %s unreadable: %s", index, exc)
                readings.append(GpuReading(index, f"GPU {index} (unreadable: {exc})", 0, 0))
                continue
            temp = self._optional(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
            power_mw = self._optional(nv.nvmlDeviceGetPowerUsage, handle)
            util = self._optional(nv.nvmlDeviceGetUtilizationRates, handle)
            procs = self._optional(nv.nvmlDeviceGetComputeRunningProcesses, handle) or []
            uuid = self._optional(nv.nvmlDeviceGetUUID, handle) or ""
            readings.append(
                GpuReading(
                    index=index,
                    name=name,
                    memory_total_mb=int(mem.total) // 2**20,
                    memory_used_mb=int(mem.used) // 2**20,
                    temperature_c=float(temp) if temp is not None else None,
                    power_w=power_mw / 1000.0 if power_mw is not None else None,
                    utilization_percent=float(util.gpu) if util is not None else None,
                    processes=[{"pid": int(p.pid), "used_mb": int(p.usedGpuMemory or 0) // 2**20} for p in procs],
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return readings

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class SimulatedProvider:
    """GPUs made of arithmetic: memory = baseline + the VRAM of the models whose servers run +
    per-request KV cache for work in flight; temperature drifts towards 40 °C + 45 °C × load.

    Steered by the SimulatedGpu rows (admin) and by ``MEDAI_GPU_SIM_FILE``, a JSON file such as
    ``{"0": {"memory_percent": 90, "temperature_c": 82}}`` (the file wins over the admin).
    """

    name = "simulated"
    simulated = True

    def __init__(self, override_file: str | None = None) -> None:
        self.override_file = override_file
        self._temps: dict[int, float] = {}

    def _file_overrides(self) -> dict[str, dict[str, float]]:
        if not self.override_file:
            return {}
        try:
            data = json.loads(Path(self.override_file).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("simulated GPU override file %s unreadable: %s", self.override_file, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def sample(self) -> list[GpuReading]:
        gpus = list(SimulatedGpu.objects.all()) or [SimulatedGpu(index=0)]
        running = list(
            ModelServer.objects.filter(state__in=[ModelServer.State.RUNNING, ModelServer.State.STARTING]).values(
                "gpu_index", "vram_mb", "endpoint_id", "pid"
            )
        )
        in_flight = slots.in_flight_by_endpoint()
        overrides = self._file_overrides()
        readings = []
        for gpu in gpus:
            on_gpu = [s for s in running if s["gpu_index"] == gpu.index]
            requests = sum(in_flight.get(s["endpoint_id"], 0) for s in on_gpu if s["endpoint_id"])
            used = gpu.baseline_used_mb + sum(s["vram_mb"] for s in on_gpu) + requests * gpu.mb_per_request
            over = overrides.get(str(gpu.index), {})
            mem_pct = over.get("memory_percent", gpu.memory_used_override_percent)
            if mem_pct is not None:
                used = int(gpu.memory_total_mb * float(mem_pct) / 100)
            used = min(used, gpu.memory_total_mb)
            load = min(1.0, used / gpu.memory_total_mb * 0.5 + min(requests, 8) / 16)
            target = 40.0 + 45.0 * load
            temp = self._temps.get(gpu.index, target)
            temp += (target - temp) * 0.3  # heat follows load, not instantly
            self._temps[gpu.index] = temp
            temp_override = over.get("temperature_c", gpu.temperature_override_c)
            if temp_override is not None:
                temp = float(temp_override)
            readings.append(
                GpuReading(
                    index=gpu.index,
                    name=gpu.name,
                    memory_total_mb=gpu.memory_total_mb,
                    memory_used_mb=used,
                    temperature_c=round(temp, 1),
                    power_w=round(60 + 240 * load, 1),
                    utilization_percent=round(100 * min(requests, 4) / 4, 1),
                    processes=[{"pid": s["pid"], "used_mb": s["vram_mb"]} for s in on_gpu if s["pid"]],
                    simulated=True,
                )
            )
        return readings

    def close(self) -> None:
        pass


class NoProvider:
    name = "none"
    simulated = False

    def sample(self) -> list[GpuReading]:
        return []

    def close(self) -> None:
        pass


def get_provider(choice: str | None = None) -> Provider:
    """The provider ``MEDAI_GPU_PROVIDER`` names (``auto``: NVML if it initializes, else simulated)."""
    choice = (choice or settings.MEDAI_GPU_PROVIDER).lower()
    if choice == "none":
        return NoProvider()
    if choice == "simulated":
        return SimulatedProvider(settings.MEDAI_GPU_SIM_FILE or None)
    try:
        return NvmlProvider()
    except (ProviderUnavailable, ImportError) as exc:
        if choice == "nvml":
            raise
        logger.info("no NVML (%s): using the simulated GPU provider", exc)
        return SimulatedProvider(settings.MEDAI_GPU_SIM_FILE or None)
