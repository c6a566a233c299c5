"""How run() is called: every argument by name, as Azure ML's server calls it, which refuses at start
the signatures it could not call that way."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scoring_image import entry_script
from scoring_image.amlcompat import Headers


def load(tmp_path: Path, source: str) -> entry_script.EntryScript:
    path = tmp_path / f"score_{abs(hash(source))}.py"
    path.write_text(textwrap.dedent(source))
    return entry_script.load(path)


def test_a_keyword_only_input_is_passed_by_name(tmp_path: Path) -> None:
    script = load(tmp_path, """
        def run(*, data):
            return {"got": data}
    """)
    assert script.call(script.prepare(b'{"a": 1}', {"a": 1}), None) == {"got": '{"a": 1}'}


def test_a_rawhttp_run_gets_the_request_headers_it_asks_for(tmp_path: Path) -> None:
    script = load(tmp_path, """
        from azureml.contrib.services.aml_request import rawhttp

        @rawhttp
        def run(request, request_headers):
            return {"method": request, "tenant": request_headers["x-tenant"]}
    """)
    assert script.form == "rawhttp" and script.wants_headers
    headers = Headers([(b"x-tenant", b"t1")])
    assert script.call("POST", headers) == {"method": "POST", "tenant": "t1"}


@pytest.mark.parametrize("signature", ["data, /", "*args", "data, **kwargs"])
def test_arguments_that_cannot_be_passed_by_name_are_refused_at_load(tmp_path: Path, signature: str) -> None:
    with pytest.raises(entry_script.ScriptError, match=r"run\(\) cannot take positional-only arguments, \*args or \*\*kwargs"):
        load(tmp_path, f"def run({signature}):\n    return 1\n")


def test_a_run_without_an_input_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(entry_script.ScriptError, match=r"run\(\) takes no argument for its input$"):
        load(tmp_path, "def run():\n    return 1\n")
    with pytest.raises(entry_script.ScriptError, match="run\\(\\) takes no argument for its input besides request_headers"):
        load(tmp_path, "def run(request_headers):\n    return 1\n")


def test_a_schema_input_with_a_default_may_be_left_out_as_azure_ml_passes_the_default(tmp_path: Path) -> None:
    """AutoML's scoring scripts declare GlobalParameters (unconverted) with a default, and clients send Inputs
    alone: Azure ML's server passes every parameter left out at its default, the decorators then convert it
    (or not); a parameter without a default is still a missing input (400)."""
    script = load(tmp_path, """
        import numpy as np
        from inference_schema.schema_decorators import input_schema
        from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
        from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

        @input_schema('Inputs', StandardPythonParameterType({'data': NumpyParameterType(np.array([[1.0, 2.0]]))}))
        @input_schema('GlobalParameters', StandardPythonParameterType(1.0), convert_to_provided_type=False)
        @input_schema('scale', StandardPythonParameterType(2.0))
        def run(Inputs, GlobalParameters=1.0, scale=2.0):
            return {"shape": list(Inputs['data'].shape), "global": GlobalParameters, "scale": scale}
    """)
    assert script.form == "schema"
    inputs = {"Inputs": {"data": [[1.0, 2.0]]}}
    assert script.call(script.prepare(b"", dict(inputs)), None) == {"shape": [1, 2], "global": 1.0, "scale": 2.0}
    given = {**inputs, "GlobalParameters": {"method": "predict"}, "scale": 3.0}
    assert script.call(script.prepare(b"", given), None) == {"shape": [1, 2], "global": {"method": "predict"}, "scale": 3.0}
    with pytest.raises(entry_script.BadInput, match="missing input\\(s\\): Inputs"):
        script.prepare(b"", {"GlobalParameters": 1.0})
