"""GET /v1/models against the real engine."""

import httpx
import openai

from tests.conftest import MODEL


def test_list_has_the_served_model_with_its_context_length(client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert model.id == MODEL
    assert model.object == "model"
    assert model.owned_by == "kangaroo"
    assert model.model_extra["max_model_len"] == 2048


def test_retrieve_served_model(client: openai.OpenAI) -> None:
    assert client.models.retrieve(MODEL).id == MODEL


def test_retrieve_unknown_model_is_404(http: httpx.Client) -> None:
    r = http.get("/v1/models/gpt-9")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
