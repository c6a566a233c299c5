"""Traces, logs and metrics to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

Off, it costs nothing: neither OpenTelemetry nor the Azure exporter is imported.
"""

from __future__ import annotations

from typing import Any

from scoring_image.config import ScorerSettings


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
    return OpenTelemetryMiddleware(app)
