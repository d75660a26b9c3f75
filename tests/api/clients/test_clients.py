"""Tool calling and structured outputs through the clients agent frameworks run on: LangChain,
the OpenAI Agents SDK (its chat-completions model and its default, Responses, one) and Vercel's
AI SDK (driven by node; its openai-compatible provider on chat completions and its openai
provider on the Responses API), each against the real engine and the demo model's weather tool."""

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from tests.api.clients.node import run_node
from tests.conftest import MODEL, RunningServer

QUESTION = "What is the weather in Lyon?"
REPORT = "Sunny, 21 C"


@tool
def get_weather(city: str) -> str:
    """The weather in a city now."""
    return REPORT


def _chat(server: RunningServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.url}/v1", api_key="unused", model=MODEL, temperature=0, max_tokens=60
    )


def test_langchain_streams_a_tool_call_it_can_assemble(server: RunningServer) -> None:
    chunks = list(_chat(server).bind_tools([get_weather]).stream(QUESTION))
    message = chunks[0]
    for chunk in chunks[1:]:
        message += chunk
    (call,) = message.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", {"city": "Lyon"})
    assert call["id"]


class Weather(BaseModel):
    city: str = Field(max_length=20)
    sunny: bool


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(server: RunningServer, method: str) -> None:
    answer = _chat(server).with_structured_output(Weather, method=method).invoke(QUESTION)
    assert isinstance(answer, Weather)


@pytest.mark.parametrize("model_class", [OpenAIChatCompletionsModel, OpenAIResponsesModel])
async def test_the_agents_sdk_runs_a_tool_loop(server: RunningServer, model_class: type) -> None:
    set_tracing_disabled(True)  # nothing leaves the machine
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city now."""
        cities.append(city)
        return REPORT

    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    agent = Agent(
        name="weather",
        tools=[get_weather],
        model=model_class(model=MODEL, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=60),
    )
    result = await Runner.run(agent, QUESTION, max_turns=3)
    assert cities == ["Lyon"]
    assert REPORT in result.final_output


@pytest.mark.parametrize("provider", ["compatible", "openai"])  # chat completions, Responses
def test_vercel_ai_sdk_generates_and_streams_with_a_tool(
    server: RunningServer, provider: str
) -> None:
    run = run_node("weather.mjs", f"{server.url}/v1", MODEL, QUESTION, provider)
    assert run["generate"]["calls"] == ["Lyon"]
    assert run["generate"]["finishReasons"][0] == "tool-calls"
    assert REPORT in run["generate"]["text"]
    assert run["stream"]["calls"] == ["Lyon"]
    assert {"type": "tool-call", "toolName": "get_weather", "input": {"city": "Lyon"}} in run[
        "stream"
    ]["parts"]
    assert REPORT in run["stream"]["text"]
