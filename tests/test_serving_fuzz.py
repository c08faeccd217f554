"""Schema fuzzing (schemathesis, from the app's own OpenAPI) of the chat and admin endpoints.

The live server on loopback gets generated valid and invalid requests, with the admin
key; nothing may answer 5xx. Bounded: ``LETHE_FUZZ_EXAMPLES`` per operation (default 40).
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the API")
from hypothesis import HealthCheck, given, settings  # noqa: E402

from lethe.config import BackendConfig, GuardConfig  # noqa: E402
from lethe.serving import ServeSettings, create_app  # noqa: E402
from test_serving_support import ServerThread, echo_upstream  # noqa: E402

ADMIN = "lk-fuzz-admin"
EXAMPLES = int(os.environ.get("LETHE_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from lethe import Guard

    home = tmp_path_factory.mktemp("fuzz-home")
    os.environ["LETHE_FUZZ_ADMIN"] = ADMIN
    with echo_upstream() as up:
        cfg = GuardConfig(backend=BackendConfig(kind="openai", model="echo", base_url=up.url + "/v1", timeout_s=10))
        guard = Guard.open(home=home, config=cfg)
        guard.forget(["What is the home address of Ulla Fenwick?"], kind="privacy", subject="Ulla Fenwick",
                     progress=False, rewriter="rule")
        settings_ = ServeSettings(home=str(home), admin_key_env="LETHE_FUZZ_ADMIN", default_rewriter="rule",
                                  upstream_timeout_s=10, max_tokens_limit=256)
        with ServerThread(create_app(guard, settings_)) as srv:
            yield srv


def _operations():
    """The app's own OpenAPI (no guard needed to build it), chat + admin operations only."""
    app = create_app(lambda: None, ServeSettings(audit_log=os.devnull))
    schema = schemathesis.openapi.from_dict(app.openapi()).include(path_regex=r"^/(v1|admin)/")
    return {r.ok().label: r.ok() for r in schema.get_all_operations()}


OPERATIONS = _operations()
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors(live, label, mode):
    headers = {"Authorization": f"Bearer {ADMIN}"}

    @given(OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case):
        response = case.call(base_url=live.url, headers=headers, timeout=60)
        assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text)
        if response.status_code >= 400:
            assert "error" in response.json()  # OpenAI-style error body

    run()
