"""CORS (off unless configured) and X-Request-ID, on the fake engine."""

from tests.fakes import fake_client

PREFLIGHT = {
    "Origin": "https://chat.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_no_cors_unless_configured() -> None:
    with fake_client() as client:
        response = client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in response.headers


def test_cors_answers_preflights_before_the_key_check_and_labels_refusals() -> None:
    with fake_client(cors_origins="https://chat.example", api_keys="k") as client:
        preflight = client.options("/v1/chat/completions", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://chat.example"
        refused = client.get("/v1/models", headers={"Origin": "https://chat.example"})
        assert refused.status_code == 401  # the page can read why
        assert refused.headers["access-control-allow-origin"] == "https://chat.example"
        assert "x-request-id" in refused.headers["access-control-expose-headers"]
        other = client.options("/v1/chat/completions", headers=PREFLIGHT | {"Origin": "https://x"})
        assert "access-control-allow-origin" not in other.headers


def test_request_id_is_echoed_or_made() -> None:
    with fake_client() as client:
        assert (
            client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
            == "abc-123"
        )
        made = client.get("/health").headers["x-request-id"]
        assert len(made) == 32
        insane = client.get("/health", headers={"X-Request-ID": "a b<script>"})
        assert insane.headers["x-request-id"] not in ("a b<script>", made)
