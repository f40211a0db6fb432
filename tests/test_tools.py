"""Typed tools (schema, validation, errors fed back), the calculator and search_docs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from agentic.agents.tools import (
    Tool,
    ToolResult,
    calculator,
    evaluate,
    python_tool,
    search_docs_tool,
    tool,
)
from agentic.agents.tools.base import parse_docstring
from agentic.agents.tools.calculator import CalculatorError
from agentic.core import ConfigError, GenerateRequest, Message, SamplingParams

# ---- tools from functions -------------------------------------------------------------------


class Point(BaseModel):
    x: float
    y: float


@tool(timeout_s=2.0)
def move(point: Point, dx: float, unit: Literal["m", "km"] = "m", note: str | None = None) -> Point:
    """Move a point along the x axis.

    Longer explanation that is part of the description.

    Args:
        point: The point to move.
        dx (float): How far to move it,
            in `unit`s.
        unit: Unit of dx.

    Returns:
        The moved point.
    """
    return Point(x=point.x + dx * (1000 if unit == "km" else 1), y=point.y)


@tool
async def slow_echo(text: str, delay: float = 0.0) -> str:
    """Echo text after a delay.

    Parameters
    ----------
    text : str
        What to echo.
    delay : float
        Seconds to wait
        before answering.
    """
    await asyncio.sleep(delay)
    return text


def test_schema_has_types_required_defaults_and_docstring_descriptions() -> None:
    schema = move.json_schema()
    assert schema["name"] == "move"
    assert schema["description"].startswith("Move a point along the x axis.")
    assert "Longer explanation" in schema["description"]
    assert "Returns" not in schema["description"]
    params = schema["parameters"]
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert params["required"] == ["point", "dx"]
    props = params["properties"]
    assert props["dx"] == {"type": "number", "description": "How far to move it, in `unit`s."}
    assert props["unit"]["enum"] == ["m", "km"] and props["unit"]["default"] == "m"
    assert props["point"]["$ref"] == "#/$defs/Point"
    assert "note" in props and "description" not in props["note"]
    assert "title" not in params
    json.dumps(schema)  # plain JSON, ready for an OpenAI `tools` entry


def test_numpy_style_docstring_and_async_tool_schema() -> None:
    props = slow_echo.json_schema()["parameters"]["properties"]
    assert props["text"] == {"type": "string", "description": "What to echo."}
    assert props["delay"]["description"] == "Seconds to wait before answering."
    assert props["delay"]["default"] == 0.0
    assert slow_echo.description == "Echo text after a delay."


def test_docstring_parser_keeps_unknown_sections_out_of_parameters() -> None:
    summary, params = parse_docstring("Do it.\n\nArgs:\n    a: first\n\nRaises:\n    b: no\n")
    assert summary == "Do it."
    assert params == {"a": "first"}


async def test_sync_tool_runs_and_returns_json_for_models() -> None:
    result = await move.run({"point": {"x": 1, "y": 2}, "dx": 0.5, "unit": "km"})
    assert isinstance(result, ToolResult)
    assert result.ok and result.name == "move"
    assert json.loads(result.content) == {"x": 501.0, "y": 2.0}
    assert result.seconds >= 0
    with pytest.raises(Exception, match="frozen"):
        result.ok = False  # type: ignore[misc]


async def test_async_tool_and_json_string_arguments() -> None:
    result = await slow_echo.run('{"text": "hi"}')
    assert result.ok and result.content == "hi"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"dx": 1.0}, "missing required argument 'point'"),
        ({"point": {"x": 0, "y": 0}, "dx": "far"}, "argument 'dx': Input should be a valid number"),
        ({"point": {"x": 0}, "dx": 1}, "missing required argument 'point.y'"),
        ({"point": {"x": 0, "y": 0}, "dx": 1, "speed": 3}, "unexpected argument 'speed'"),
        ({"point": {"x": 0, "y": 0}, "dx": 1, "unit": "mi"}, "argument 'unit'"),
        ('{"point": {"x": 0, "y": 0}, "dx": 1', "are not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
    ],
)
async def test_bad_arguments_come_back_as_errors_naming_the_field(
    arguments: dict[str, Any] | str, expected: str
) -> None:
    result = await move.run(arguments)
    assert not result.ok
    assert expected in result.content
    assert "pydantic" not in result.content and "errors.pydantic.dev" not in result.content
    assert len(result.content) < 200


async def test_exceptions_and_timeouts_are_fed_back_not_raised() -> None:
    @tool
    def explode(n: int) -> int:
        """Fail."""
        raise KeyError(f"no item {n}")

    @tool(timeout_s=0.2)
    def sleepy() -> str:
        """Block the thread."""
        time.sleep(2)
        return "late"

    result = await explode.run({"n": 3})
    assert not result.ok and result.content == "KeyError: 'no item 3'"
    start = time.perf_counter()
    timed = await Tool(slow_echo.fn, name="echo", timeout_s=0.2).run({"text": "x", "delay": 5})
    assert not timed.ok and timed.content == "timed out after 0.2s"
    sync_timed = await sleepy.run({})
    assert not sync_timed.ok and sync_timed.content == "timed out after 0.2s"
    assert time.perf_counter() - start < 1.5


async def test_a_tool_raising_its_own_timeout_error_is_not_called_a_timeout() -> None:
    @tool(timeout_s=5)
    async def network() -> str:
        """Fail like a client library."""
        raise TimeoutError("upstream took too long")

    result = await network.run({})
    assert not result.ok and result.content == "TimeoutError: upstream took too long"


def test_bad_definitions_raise_config_error_naming_the_parameter() -> None:
    with pytest.raises(ConfigError, match="parameter 'b': missing type annotation"):

        @tool
        def no_hint(a: int, b) -> int:  # type: ignore[no-untyped-def]
            return a

    with pytest.raises(ConfigError, match=r"parameter 'rest': \*args/\*\*kwargs"):

        @tool
        def star(*rest: int) -> int:
            return 0

    with pytest.raises(ConfigError, match=r"parameter 'kw': \*args/\*\*kwargs"):

        @tool
        def kwargs(**kw: int) -> int:
            return 0

    with pytest.raises(ConfigError, match="tool name"):
        tool(name="has spaces")(lambda: 0)
    with pytest.raises(ConfigError, match="timeout_s"):
        tool(name="ok", timeout_s=0)(lambda: 0)


def test_decorator_arguments_override_name_and_description() -> None:
    @tool(name="lookup-v2", description="Find a thing.")
    def lookup(key: str) -> str:
        """Ignored summary."""
        return key

    assert lookup.name == "lookup-v2"
    assert lookup.json_schema()["description"] == "Find a thing."
    assert lookup("k") == "k"  # still callable directly


# ---- calculator -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("2 ** -2", "0.25"),
        ("-3 ** 2", "-9"),
        ("+-+4", "-4"),
        ("0.1 + 0.2", "0.3"),
        ("1 / 3", "0.333333333333333"),
        ("sqrt(16)", "4"),
        ("sqrt(2) * sqrt(2)", "2"),
        ("log(100, 10)", "2"),
        ("exp(0) + sin(0) + cos(0) + tan(0)", "2"),
        ("abs(-5)", "5"),
        ("round(2.567, 2)", "2.57"),
        ("round(7.5)", "8"),
        ("floor(-2.5)", "-3"),
        ("ceil(2.1)", "3"),
        ("min(4, 2, 8) + max(1, 9)", "11"),
        ("2 * pi", "6.28318530717959"),
        ("e", "2.71828182845905"),
        ("1e3 + 1", "1001"),
        ("12345678901234567890 * 98765432109876543210", "1219326311370217952237463801111263526900"),
    ],
)
async def test_calculator_results(expression: str, expected: str) -> None:
    assert evaluate(expression) == expected
    result = await calculator.run({"expression": expression})
    assert result.ok and result.content == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "not allowed: function '__import__'"),
        ("__import__('os').system('ls')", "not allowed: calling anything but a named function"),
        ("x + 1", "not allowed: name 'x'"),
        ("math.pi", "not allowed: attribute access"),
        ("(1).real", "not allowed: attribute access"),
        ("[1, 2]", "not allowed: list"),
        ("[1, 2][0]", "not allowed: subscript"),
        ("'abc'[0]", "not allowed: subscript"),
        ("(lambda: 1)()", "not allowed: calling anything but a named function"),
        ("lambda: 1", "not allowed: lambda"),
        ("[i for i in (1, 2)]", "not allowed: comprehension"),
        ("sum(i for i in (1, 2))", "not allowed: function 'sum'"),
        ("1 < 2", "not allowed: comparison"),
        ("1 and 2", "not allowed: boolean operator"),
        ("1 if 1 else 2", "not allowed: conditional expression"),
        ("(y := 2)", "not allowed: assignment expression"),
        ("1 << 3", "not allowed: operator <<"),
        ("~1", "not allowed: operator ~"),
        ("'a' * 3", "not allowed: constant 'a'"),
        ("True + 1", "not allowed: constant True"),
        ("2j", "not allowed: constant 2j"),
        ("round(2.5, ndigits=1)", "not allowed: keyword arguments"),
        ("f'{1}'", "not allowed: f-string"),
        ("1 +", "invalid expression"),
        ("import os", "invalid expression"),
        ("", "empty expression"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt(): math domain error"),
        ("min()", "min():"),
        ("(-8) ** (1 / 3)", "result is not a real number"),
    ],
)
async def test_calculator_refuses_with_a_clear_message(expression: str, message: str) -> None:
    with pytest.raises(
        CalculatorError, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        evaluate(expression)
    result = await calculator.run({"expression": expression})
    assert not result.ok and result.content.startswith("CalculatorError: " + message)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9 ** 9 ** 9", "result too large"),
        ("2 ** 10 ** 10", "result too large"),
        ("(2 ** 4000) * (2 ** 4000)", "result too large"),
        ("10.0 ** 400", "result too large"),
        ("exp(1000)", "result too large"),
        ("1" + " + 1" * 600, "expression too long"),
        ("(" * 400 + "1" + ")" * 400, "too many nested parentheses"),
    ],
)
def test_calculator_denial_of_service_guards_answer_fast(expression: str, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)
    assert time.perf_counter() - start < 0.5


# ---- search_docs ----------------------------------------------------------------------------


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "guide").mkdir()
    (tmp_path / "cooking.md").write_text(
        "# Pasta\n\nBoil the pasta in salted water for ten minutes.\n\n"
        "Drain it and add the tomato sauce.\n"
    )
    (tmp_path / "guide" / "sandbox.rst").write_text(
        "Sandbox\n=======\n\nThe python tool runs code in a subprocess with a memory limit,\n"
        "a CPU time limit and no network access.\n\nOutput is truncated after a few thousand "
        "characters.\n"
    )
    (tmp_path / "weather.txt").write_text("Rain is expected on Tuesday.\n\nSunny on Friday.")
    (tmp_path / "ignored.py").write_text("memory limit network subprocess sandbox " * 20)
    return tmp_path


async def test_search_docs_ranks_the_relevant_passage_first(docs: Path) -> None:
    search = search_docs_tool(docs, k=2)
    assert search.json_schema()["parameters"]["required"] == ["query"]
    result = await search.run({"query": "how is the memory of the python subprocess limited?"})
    assert result.ok
    first = result.content.split("\n\n")[0]
    assert first.startswith("[1] guide/sandbox.rst")
    assert "memory limit" in first
    assert "ignored.py" not in result.content
    pasta = await search.run({"query": "boil pasta water"})
    assert pasta.content.startswith("[1] cooking.md\nBoil the pasta")


async def test_search_docs_with_no_matching_words_says_so(docs: Path) -> None:
    search = search_docs_tool(docs)
    result = await search.run({"query": "zeppelin"})
    assert result.ok and result.content == "no passage matches 'zeppelin'"
    stopwords_only = await search.run({"query": "the of and"})
    assert stopwords_only.content.startswith("no passage matches")


def test_search_docs_long_paragraphs_are_split(tmp_path: Path) -> None:
    from agentic.agents.tools import DocIndex

    (tmp_path / "long.txt").write_text(" ".join(f"word{i}" for i in range(1000)))
    index = DocIndex(tmp_path, max_chars=300)
    assert len(index.passages) > 10
    assert all(len(p.text) <= 300 for p in index.passages)
    assert index.search("word999", 1)[0].text.endswith("word999")


def test_search_docs_missing_or_empty_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "nope")):
        search_docs_tool(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.md").write_text("\n\n  \n")
    with pytest.raises(ConfigError, match="no non-empty"):
        search_docs_tool(tmp_path / "empty")
    with pytest.raises(ConfigError, match="k must be"):
        search_docs_tool(tmp_path, k=0)


def test_tools_package_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agentic.agents.tools; "
        "print(sorted(m for m in ('torch', 'transformers', 'bm25s') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the real model's tool calls --------------------------------------------------------------


@pytest.mark.slow
async def test_real_model_output_as_tool_arguments_is_recovered(smollm2: Any) -> None:
    """SmolLM2's raw replies go straight into the tools, as an agent loop would pass them: every
    call returns a ToolResult (never raises), and malformed calls say what is wrong."""
    prompts = {
        "calculator": "Call the calculator tool to compute 17 * 3 + 4. Reply with JSON only, "
        'like {"expression": "..."}.',
        "python": "Call the python tool to print the sum of 1 to 10. Reply with JSON only, "
        'like {"code": "..."}.',
    }
    requests = [
        GenerateRequest(
            messages=[Message(role="user", content=text)],
            params=SamplingParams(max_tokens=32, temperature=0.0),
        )
        for text in prompts.values()
    ]
    generations = await smollm2.generate(requests)
    tools = {"calculator": calculator, "python": python_tool(timeout_s=3)}
    for (name, _), gens in zip(prompts.items(), generations, strict=True):
        raw = gens[0].text
        assert raw.strip(), "the model produced no text"
        as_json = await tools[name].run(raw)
        assert isinstance(as_json, ToolResult)
        if not as_json.ok:
            assert as_json.content.startswith(
                ("arguments for tool", "invalid arguments for tool", "CalculatorError", "Sandbox")
            ), as_json.content
        # The same text given as the argument value: the tool itself must cope with it.
        field = "expression" if name == "calculator" else "code"
        as_value = await tools[name].run({field: raw})
        assert isinstance(as_value, ToolResult) and as_value.content
