"""run() names the telemetry modules loaded in its worker: an exporter cannot exist without them."""
import sys


def init():
    pass


def run(raw_data):
    return sorted(name for name in sys.modules if name.startswith(("opentelemetry", "azure.monitor")))
