"""Azure ML's `azureml.monitoring.ModelDataCollector`, for entry scripts that collect their own model data.

Azure ML v1 collects only what a script hands `collect()`: rows (a list, a numpy array, a pandas DataFrame) as
CSV, headed by `feature_names` (or the DataFrame's columns), an "inputs" collector adding the `$aml_dc_*`
correlation columns and returning them for `add_correlations`.  Here the rows are formatted on the run thread
(as Azure ML's collector formats them in run()), kept with the request, and spooled by the worker beside its
other records before the answer is sent: they are shipped, and survive a crash, as those do (the shipper writes
them as CSV in Azure ML's folders, shipper.py).  A script that makes a collector has its requests' automatic
records left out: Azure ML collects what the script collects, nothing more.  What is collected outside a request's
run() (in init(), on a thread of the script's own) is spooled at once, on the thread that collects it, with no
request id (`$aml_request_id` all zeros), as Azure ML's collector writes it.  Where the service does not collect,
`collect()` returns None and writes nothing, as Azure ML's does when collection is not enabled.

`amlcompat.install()` registers this module as `azureml.monitoring` only where azureml-monitoring is missing.
"""

from __future__ import annotations

import contextvars
import csv
import datetime
import io
import logging
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import orjson

from scoring_image import logs
from scoring_image.config import ScorerSettings, is_folder_name

log = logging.getLogger("scoring_image.collection")

DESIGNATIONS = ("inputs", "predictions", "labels", "signals", "general")
CORRELATION = "$aml_dc_correlation_id"
TIMESTAMP = "$aml_dc_scoring_timestamp"
BOUNDARY = "$aml_dc_boundary"
WORKSPACE = "$aml_workspace"
SERVICE = "$aml_service_name"
MODEL = "$aml_model_name"
VERSION = "$aml_model_version"
REQUEST_ID = "$aml_request_id"
CORRELATION_HEADERS = (CORRELATION, TIMESTAMP, BOUNDARY, WORKSPACE, SERVICE, MODEL, VERSION, REQUEST_ID)
_DAY_MINUTES = 60 * 24  # $aml_dc_boundary: a file a day (Azure ML's hourly files are not offered)
_NO_REQUEST = "00000000-0000-0000-0000-000000000000"  # Azure ML's $aml_request_id outside a request

# What this worker's requests collect: set by `enable` in a worker whose service collects; None: nothing is.
_settings: ScorerSettings | None = None
# What spools lines collected outside a request (set by `enable`).
_spool_now: Callable[[list[bytes]], None] | None = None
# The spool lines of the request whose run() is running (the run thread's): written by the worker after it.
pending: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar("pending", default=None)
made = False  # a collector was made: the script collects its own records, the automatic ones are left out


def enable(settings: ScorerSettings, spool_now: Callable[[list[bytes]], None]) -> None:
    """Collect what collectors are handed, in a worker whose service collects (before the script is loaded);
    `spool_now` spools what is collected outside a request."""
    global _settings, _spool_now
    _settings, _spool_now = settings, spool_now


class ModelDataCollector:
    """Collects a script's rows for one model and designation, as Azure ML's does."""

    def __init__(self, model_name: str, designation: str = "default", feature_names: list[str] | None = None,
                 workspace: str = "default/default/default", webservice_name: str = "default",
                 model_version: str = "default", collection_name: str = "default") -> None:
        """`workspace`, `webservice_name` and `model_version` are the service's own unless given (the model's
        version: the deployed one of that name, the highest if several); `collection_name` names the file of a
        "signals" or "general" collector, as in Azure ML, where the others' file is "data"."""
        global made
        designation = "general" if designation == "default" else designation
        if designation not in DESIGNATIONS:
            raise ValueError(f"designation {designation!r} is not one of 'default', {', '.join(map(repr, DESIGNATIONS))}")
        self._enabled = _settings is not None
        if _settings is None:
            log.info("model data collection is off for this service: ModelDataCollector(%r) collects nothing", model_name)
            return
        made = True
        if workspace == "default/default/default":
            workspace = _settings.data_collection_workspace
        webservice_name = _settings.data_collection_service if webservice_name == "default" else webservice_name
        if model_version == "default":
            model_version = _deployed_version(model_name, _settings.data_collection_models)
        file = collection_name if designation in ("signals", "general") else "data"
        folders = [*workspace.lower().split("/"), webservice_name, model_name, str(model_version), file]
        if len(folders) != 7 or not all(is_folder_name(f) for f in folders):
            raise ValueError(f"ModelDataCollector: workspace {workspace!r} (<subscription>/<resourcegroup>/<workspace>), "
                             f"webservice_name {webservice_name!r}, model_name {model_name!r}, model_version "
                             f"{model_version!r} and collection_name {collection_name!r} each name a folder of a blob")
        self.designation = designation
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.workspace, self.service_name = workspace.lower(), webservice_name
        self.model_name, self.model_version = model_name, str(model_version)
        self._file = file
        self._correlated = designation == "inputs"  # its rows carry the correlation columns, so does its header

    def collect(self, input_data: Any, user_correlation_id: str = "") -> dict[str, Any] | None:
        """Collect rows: a list (one row), a numpy array (1-D: one row) or a pandas DataFrame. An "inputs"
        collector adds the correlation columns and returns them (for `add_correlations`); others return None."""
        if not self._enabled:
            return None
        correlations = None
        if self.designation == "inputs":
            correlations = self._correlations(user_correlation_id)
            input_data = self.add_correlations(input_data, correlations)
        rows = _csv_rows(input_data)
        if rows is None:
            warnings.warn("collect failed: input data must be a list, numpy array or pandas dataframe", stacklevel=2)
            return None
        header, text = rows
        if not text:  # no rows
            return correlations
        if header is None and self.feature_names is not None:
            header = _csv_line(self.feature_names + (list(CORRELATION_HEADERS) if self._correlated else []))
        line = orjson.dumps({
            "id": uuid.uuid4().hex, "request_id": logs.request_id.get() or "", "time": time.time(),
            "collected": {"workspace": self.workspace, "service": self.service_name, "model": self.model_name,
                          "version": self.model_version, "designation": self.designation, "file": self._file,
                          "header": header, "rows": text},
        }, option=orjson.OPT_APPEND_NEWLINE)
        lines = pending.get()
        if lines is not None:
            lines.append(line)
        elif _spool_now is not None:
            _spool_now([line])
        return correlations

    def add_correlations(self, input_data: Any, correlations: dict[str, Any] | None) -> Any:
        """`input_data` with the correlation columns (what an "inputs" collector's collect() returned) appended:
        a list's values, a numpy array's or DataFrame's columns; its header gets their names too."""
        if correlations is None:
            return input_data
        self._correlated = True
        values = [correlations[name] for name in CORRELATION_HEADERS]
        if isinstance(input_data, list):
            return input_data + values
        numpy = sys.modules.get("numpy")
        if numpy is not None and isinstance(input_data, numpy.ndarray):
            rows = input_data if input_data.ndim > 1 else input_data.reshape(1, -1)
            return numpy.append(rows, numpy.array([values] * len(rows), dtype=object), axis=1)
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(input_data, pandas.DataFrame):
            frame = input_data.copy(deep=False)
            for name, value in zip(CORRELATION_HEADERS, values):
                frame.insert(len(frame.columns), name, value)
            return frame
        warnings.warn("add_correlations: input data must be a list, numpy array or pandas dataframe", stacklevel=2)
        return input_data

    def _correlations(self, user_correlation_id: str) -> dict[str, Any]:
        generated = str(uuid.uuid4())
        return {
            CORRELATION: f"{user_correlation_id}-{generated}" if user_correlation_id else generated,
            TIMESTAMP: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(),
            BOUNDARY: _DAY_MINUTES,
            WORKSPACE: self.workspace,
            SERVICE: self.service_name,
            MODEL: self.model_name,
            VERSION: self.model_version,
            REQUEST_ID: logs.request_id.get() or _NO_REQUEST,
        }


def _deployed_version(model_name: str, models: list[str]) -> str:
    versions = [version for name, _, version in (m.partition(":") for m in models) if name == model_name]
    if not versions:
        return "default"  # not a model of this service: Azure ML files it under "default" too
    return max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


def _csv_line(values: list[Any]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(values)
    return text.getvalue()[:-1]


def _csv_rows(data: Any) -> tuple[str | None, str] | None:
    """(header or None, rows) as CSV text without the last line's end; None for data of no table."""
    text = io.StringIO()
    if isinstance(data, list):
        csv.writer(text, lineterminator="\n").writerow(data)
        return None, text.getvalue()[:-1]
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(data, numpy.ndarray):
        csv.writer(text, lineterminator="\n").writerows(data if data.ndim > 1 else [data])
        return None, text.getvalue()[:-1]
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        data.to_csv(text, index=False, header=False, lineterminator="\n")
        return _csv_line(list(data.columns)), text.getvalue()[:-1]
    return None

