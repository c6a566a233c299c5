"""Traces, logs and metrics to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

Off, it costs nothing: neither OpenTelemetry nor the Azure exporter is imported.
"""

from __future__ import annotations

import sys
from typing import Any

from scoring_image.config import ScorerSettings

SHUTDOWN_S = 3.0  # the most a stopping worker waits for its last telemetry to leave
PROBES = r"//[^/]+/(ready|metrics)?(\?|$)"  # matched in the request's full url


def instrument(app: Any, settings: ScorerSettings) -> Any:
    """Send this worker's telemetry to Application Insights and trace every request through `app`."""
    if settings.appinsights_connection_string is None:
        return app
    from azure.monitor.opentelemetry import configure_azure_monitor
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    configure_azure_monitor(
        connection_string=settings.appinsights_connection_string.get_secret_value(),
        enable_live_metrics=False,  # a live stream per worker process; metrics come from /metrics
    )
    # Not the probes (the kubelet's GET / and /ready, Prometheus' /metrics): a request item each, every few
    # seconds, billed. Nor a span per ASGI receive and send, which Application Insights shows as dependencies.
    traced = OpenTelemetryMiddleware(_with_query(app), excluded_urls=PROBES, exclude_spans=["receive", "send"])
    return _without_query(traced)


# A GET's query is the model's input (Azure ML reads it as run()'s data): it stays out of the request's url
# in Application Insights, where who may read the telemetry may not read the data. The traced app gets it back.
_QUERY = "aks-model-serving.query"


def _without_query(traced: Any) -> Any:
    async def hide(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            scope = {**scope, "query_string": b"", _QUERY: scope["query_string"]}
        await traced(scope, receive, send)
    return hide


def _with_query(app: Any) -> Any:
    async def restore(scope: dict, receive: Any, send: Any) -> None:
        if _QUERY in scope:
            scope = {**scope, "query_string": scope[_QUERY]}
        await app(scope, receive, send)
    return restore


def shutdown(timeout_s: float = SHUTDOWN_S) -> None:
    """Export what is still batched (up to OTEL_BSP_SCHEDULE_DELAY of spans and logs): a worker leaves
    by os._exit, past OpenTelemetry's own exit handler. Bounded: an unreachable endpoint must not hold
    up a recycled worker's replacement. Nothing to do where telemetry is off."""
    import sys
    import threading

    if "opentelemetry" not in sys.modules:
        return
    from opentelemetry import _logs, metrics, trace

    def stop_all() -> None:
        for provider in (trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()):
            stop = getattr(provider, "shutdown", None)  # the no-op providers have none
            if stop is not None:
                stop()

    flushing = threading.Thread(target=stop_all, name="telemetry-shutdown", daemon=True)
    flushing.start()
    flushing.join(timeout_s)


def current() -> Any:
    """The request's trace context, for the run thread to carry while run() runs (None when off)."""
    if "opentelemetry.context" not in sys.modules:
        return None
    from opentelemetry import context

    return context.get_current()


def attach(trace: Any) -> Any:
    """Make `trace` (from `current`) the run thread's until `detach`: only it, as init() may have set
    other context variables (decimal's context, numpy's error state) that every run() must keep."""
    if trace is None:
        return None
    from opentelemetry import context

    return context.attach(trace)


def detach(token: Any) -> None:
    if token is not None:
        from opentelemetry import context

        context.detach(token)
