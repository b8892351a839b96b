"""`frugal serve`'s app over real HTTP: a uvicorn server on a free loopback port, driven with
the `openai` client and httpx. Expected texts come from the engine's offline `generate` on the
same weights (a separate Engine instance, no scheduler), so the server's scheduling, text
streaming and stop strings are checked against an independent path."""

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest

from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.http_limits import HttpLimits
from frugal_lm.infer.http_server import uvicorn_server
from frugal_lm.infer.loading import load_model
from frugal_lm.infer.server import create_app

from ..conftest import running_server

MODEL = "tiny"
PROMPTS = ["12+7=", "reverse: abc", "3+4=", "reverse: hello", "99+1=", "x", "reverse: ab", "5+5="]


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run)


@pytest.fixture(scope="module")
def served(loaded):
    with running_server(loaded) as (url, state, _):
        yield url, state


@pytest.fixture(scope="module")
def url(served):
    return served[0]


@pytest.fixture(scope="module")
def http(url):
    """One connection pool for the module (a fresh httpx client per call costs ~0.1 s)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def reference(loaded):
    """Greedy texts from the engine's offline generate: {(prompt, conditions, max_new_tokens): result}."""
    engine = Engine(loaded, max_batch_size=2)
    cache = {}

    def generate(prompt, max_new_tokens, conditions=("direct",)):
        key = (prompt, conditions, max_new_tokens)
        if key not in cache:
            request = GenerationRequest(prompt, conditions, SamplingParams(max_new_tokens=max_new_tokens))
            cache[key] = engine.generate([request])[0]
        return cache[key]

    return generate


def test_models_and_health(http):
    models = http.get("/v1/models").json()
    assert [card["id"] for card in models["data"]] == [MODEL]
    assert http.get(f"/v1/models/{MODEL}").status_code == 200
    assert http.get("/v1/models/other").status_code == 404
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["active"] == 0 and health["queued"] == 0
    assert health["context"] == 64 and health["max_batch_size"] == 4
    assert (health["device"], health["dtype"], health["compiled"], health["cuda_graphs"]) == (
        "cpu",
        "fp32",
        False,
        False,
    )


def test_completion_matches_offline_generate(client, reference, loaded):
    response = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    expected = reference(PROMPTS[0], 8)
    choice = response.choices[0]
    assert choice.text == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert (
        response.usage.prompt_tokens
        == expected.prompt_tokens
        == len(Engine(loaded, max_batch_size=1).encode_prompt(PROMPTS[0]))
    )
    # "stop" means EOA, which is not counted in the tokens the engine reports.
    assert response.usage.completion_tokens == len(expected.token_ids) + (expected.finish_reason == "stop")
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_completion_with_several_prompts_and_a_condition(client, reference):
    response = client.completions.create(
        model=MODEL, prompt=PROMPTS[:3], max_tokens=6, temperature=0, extra_body={"condition": "cot"}
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.text for c in response.choices] == [reference(p, 6, ("cot",)).text for p in PROMPTS[:3]]


def test_token_id_prompts_are_the_instruction_text_tokens(client, reference, loaded):
    text_ids = [loaded.tokenizer.tokenizer.encode(p, add_special_tokens=False).ids for p in PROMPTS[:2]]
    one = client.completions.create(model=MODEL, prompt=text_ids[0], max_tokens=6, temperature=0)
    assert one.choices[0].text == reference(PROMPTS[0], 6).text
    assert one.usage.prompt_tokens == len(text_ids[0]) + 3  # BOQ + direct + text + EOQ
    several = client.completions.create(model=MODEL, prompt=text_ids, max_tokens=6, temperature=0)
    assert [c.text for c in several.choices] == [reference(p, 6).text for p in PROMPTS[:2]]


def test_chat_lone_user_message_is_the_instruction(client, reference):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=8, temperature=0
    )
    assert response.object == "chat.completion"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == reference(PROMPTS[1], 8).text


def test_chat_history_is_rendered_into_one_instruction(client, reference):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": [{"type": "text", "text": "2+2="}]},
    ]
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    expected = reference("Be brief.\n\nUser: 1+1=\n\nAssistant: 2\n\nUser: 2+2=", 6)
    assert response.choices[0].message.content == expected.text
    assert response.usage.prompt_tokens == expected.prompt_tokens


def test_streaming_chat_matches_the_whole_answer(http, client, reference):
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPTS[3]}],
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    expected = reference(PROMPTS[3], 12)
    assert text == expected.text
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == [expected.finish_reason]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == expected.prompt_tokens

    # The openai client reads the same stream.
    stream = client.chat.completions.create(
        model=MODEL, messages=request["messages"], max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected.text


def test_streaming_completion(client, reference):
    stream = client.completions.create(model=MODEL, prompt=PROMPTS[4], max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == reference(PROMPTS[4], 10).text
    assert chunks[-1].choices[0].finish_reason == reference(PROMPTS[4], 10).finish_reason


def test_stop_string_cuts_the_text(client, reference):
    expected = reference(PROMPTS[0], 16).text
    stop = next(expected[i : i + 2] for i in range(2, len(expected) - 1) if "\ufffd" not in expected[i : i + 2])
    for stream in (False, True):
        response = client.completions.create(
            model=MODEL, prompt=PROMPTS[0], max_tokens=16, temperature=0, stop=[stop, "never-produced"], stream=stream
        )
        choices = [c.choices[0] for c in response] if stream else response.choices
        assert "".join(c.text for c in choices) == expected[: expected.index(stop)]
        assert choices[-1].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client):
    def sample(seed):
        return (
            client.completions.create(
                model=MODEL,
                prompt=PROMPTS[2],
                max_tokens=10,
                temperature=1.0,
                top_p=0.9,
                seed=seed,
                extra_body={"top_k": 50},
            )
            .choices[0]
            .text
        )

    assert sample(3) == sample(3)
    assert len({sample(seed) for seed in range(4)}) > 1  # sampling, not greedy


def test_twenty_concurrent_requests_all_answered(url, reference):
    prompts = [PROMPTS[i % len(PROMPTS)] + str(i) for i in range(20)]

    async def ask_all():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=6, temperature=0
                    )
                    if i % 2
                    else client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0)
                    for i, p in enumerate(prompts)
                )
            )

    responses = asyncio.run(ask_all())
    texts = [r.choices[0].message.content if i % 2 else r.choices[0].text for i, r in enumerate(responses)]
    # Batching with other requests must not change any greedy answer.
    assert texts == [reference(p, 6).text for p in prompts]


BAD_REQUESTS = [
    ("/v1/completions", b'{"model": "tiny", "prompt": "a",', 400, None),  # malformed JSON
    ("/v1/completions", b"[1, 2]", 400, None),  # not an object
    ("/v1/completions", b"", 400, None),  # no body
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": "8"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "temperature": 5}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "tiny", "prompt": [1, "a"]}, 400, "prompt"),  # mixed shapes
    ("/v1/completions", {"model": "tiny", "prompt": [True, 2]}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": [[1], []]}, 400, "prompt"),  # an empty token list
    ("/v1/completions", {"model": "tiny", "prompt": [10**9]}, 400, "prompt"),  # not in the vocabulary
    ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 10**9}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 61}, 400, "max_tokens"),  # context 64
    ("/v1/completions", {"model": "tiny", "prompt": "a", "n": 2}, 400, "n"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "echo": True}, 400, "echo"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stop": ""}, 400, "stop"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "condition": "chatty"}, 400, "condition"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "frobnicate": 1}, 400, "frobnicate"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "a"}, 404, "model"),
    ("/v1/completions", {"model": "tiny", "prompt": "word " * 200}, 400, "prompt"),  # > context
    ("/v1/completions", {"model": "tiny", "prompt": "x" * 2_000_000}, 400, "prompt"),  # rejected untokenized
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "word " * 200}]},
        400,
        "messages",
    ),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "robot", "content": "a"}]},
        400,
        "messages[0].role",
    ),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": 3}]},
        400,
        "messages[0].content",
    ),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "assistant", "content": "a"}]}, 400, "messages"),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "a"}], "tools": [{}]},
        400,
        "tools",
    ),
    # A lone surrogate is valid JSON but not Unicode text: no tokenizer takes it.
    ("/v1/completions", b'{"model": "tiny", "prompt": "a\\udfff"}', 400, "prompt"),
    ("/v1/completions", b'{"model": "tiny", "prompt": ["a", "\\ud800"]}', 400, "prompt[1]"),
    ("/v1/completions", b'{"model": "tiny", "prompt": "a", "stop": "\\udfff"}', 400, "stop"),
    (
        "/v1/chat/completions",
        b'{"model": "tiny", "messages": [{"role": "user", "content": "\\udfff"}]}',
        400,
        "messages[0].content",
    ),
]


def test_bad_requests_get_openai_errors_and_the_server_stays_healthy(http, client):
    for path, body, status, param in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = http.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, (body if len(content) < 200 else path, response.text)
        error = response.json()["error"]
        assert error["message"] and error["type"] and error["param"] == param, (body, error)
    assert http.post("/v1/nope", json={}).status_code == 404
    assert http.get("/v1/completions").status_code == 405
    health = http.get("/health").json()
    assert (health["status"], health["active"], health["queued"]) == ("ok", 0, 0)
    assert client.completions.create(model=MODEL, prompt="a", max_tokens=2, temperature=0).choices


class GatedStep:
    """Wraps a real engine's step so a test decides when decoding may go on."""

    def __init__(self, engine):
        self.real_step = engine.step
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self):
        self.entered.set()
        assert self.open.wait(20), "test forgot to open the gate"
        self.calls += 1
        return self.real_step()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def gated(loaded, monkeypatch):
    """A server with one slot and one queue place whose decoding waits for `gate.open`."""
    with running_server(loaded, max_batch_size=1, max_queue=1) as (url, state, server):
        gate = GatedStep(state.engine)
        monkeypatch.setattr(state.engine, "step", gate)
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                yield http, state, gate, server
        finally:
            gate.open.set()


def in_thread(call, *args, **kwargs):
    """Start `call` in a thread; `.join()` then `.result`."""
    thread = threading.Thread(target=lambda: setattr(thread, "result", call(*args, **kwargs)), daemon=True)
    thread.start()
    return thread


def test_full_queue_answers_503_then_recovers(gated):
    http, state, gate, _ = gated
    request = {"model": MODEL, "prompt": "1+1=", "max_tokens": 3, "temperature": 0}
    first = in_thread(http.post, "/v1/completions", json=request)
    assert gate.entered.wait(10)  # decoding: the one slot is taken
    second = in_thread(http.post, "/v1/completions", json=request)
    wait_for(lambda: http.get("/health").json()["queued"] == 1)  # waiting: the one queue place is taken
    refused = http.post("/v1/completions", json=request)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    assert http.get("/health").json()["status"] == "ok"
    gate.open.set()
    for post in (first, second):
        post.join(30)
        assert post.result.status_code == 200
    assert http.post("/v1/completions", json=request).status_code == 200


@pytest.mark.parametrize("stream", [True, False])
def test_disconnected_client_frees_its_slot(gated, stream):
    http, state, gate, _ = gated
    request = {"model": MODEL, "prompt": "1+1=", "max_tokens": 50, "temperature": 0, "stream": stream}
    if stream:  # the client reads the first event and hangs up
        with http.stream("POST", "/v1/completions", json=request) as response:
            assert response.status_code == 200
            assert gate.entered.wait(10)
    else:  # the client gives up while the request decodes
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=request, timeout=httpx.Timeout(30, read=0.5))
    assert http.get("/health").json()["active"] == 1
    gate.open.set()
    wait_for(lambda: http.get("/health").json()["active"] == 0)
    assert state.engine.free_slots() == 1
    assert gate.calls < 50  # cancelled, not run to max_tokens
    assert http.post("/v1/completions", json={**request, "max_tokens": 2, "stream": False}).status_code == 200


def test_shutdown_lets_running_requests_finish(gated):
    http, state, gate, server = gated
    request = {"model": MODEL, "prompt": "1+1=", "max_tokens": 3, "temperature": 0}
    post = in_thread(http.post, "/v1/completions", json=request)
    assert gate.entered.wait(10)
    server.should_exit = True  # what Ctrl-C does
    gate.open.set()
    post.join(30)
    assert post.result.status_code == 200
    wait_for(lambda: not state.scheduler._thread.is_alive())


def test_a_failing_decode_step_fails_its_request_not_the_server(gated):
    http, state, gate, _ = gated
    real_step, failures = gate.real_step, []

    def fails_once():
        if not failures:
            failures.append(1)
            raise RuntimeError("simulated device error")
        return real_step()

    gate.real_step = fails_once
    gate.open.set()
    request = {"model": MODEL, "prompt": "1+1=", "max_tokens": 3, "temperature": 0}
    failed = http.post("/v1/completions", json=request)
    assert failed.status_code == 500 and "simulated device error" in failed.json()["error"]["message"]
    assert http.get("/health").json()["status"] == "ok" and state.engine.free_slots() == 1
    assert http.post("/v1/completions", json=request).status_code == 200


def test_prompts_joining_together_are_prefilled_in_one_call_and_a_bad_one_fails_alone(loaded, monkeypatch):
    with running_server(loaded, max_batch_size=4) as (url, state, _):
        engine = state.engine
        real_add_many, batches = engine.add_many, []

        def recording_add_many(prompts, samplings):
            batches.append(len(prompts))
            return real_add_many(prompts, samplings)

        monkeypatch.setattr(engine, "add_many", recording_add_many)
        request = {"model": MODEL, "prompt": ["1+1=", "2+2=", "3+3="], "max_tokens": 3, "temperature": 0}
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.post("/v1/completions", json=request).status_code == 200
            assert batches == [3]

            # The batched prefill fails; one by one, only the prompt at fault fails.
            def failing_add_many(prompts, samplings):
                raise RuntimeError("simulated batch failure")

            def add(prompt_ids, sampling):
                if sampling.max_new_tokens == 2:
                    raise RuntimeError("simulated bad prompt")
                return real_add_many([prompt_ids], [sampling])[0]

            monkeypatch.setattr(engine, "add_many", failing_add_many)
            monkeypatch.setattr(engine, "add", add)
            assert http.post("/v1/completions", json=request).status_code == 200
            failed = http.post("/v1/completions", json={**request, "max_tokens": 2})
            assert failed.status_code == 500 and "simulated bad prompt" in failed.json()["error"]["message"]
            assert http.get("/health").json()["status"] == "ok" and engine.free_slots() == 4


def test_a_request_larger_than_the_whole_capacity_is_a_400_not_a_503(gated):
    http, state, gate, _ = gated
    # Capacity is 1 slot + 1 queue place: three prompts could never be admitted, retrying is pointless.
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": ["a", "b", "c"], "max_tokens": 2})
    assert response.status_code == 400 and "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "too_many_prompts" and error["param"] == "prompt"
    assert "at most 2" in error["message"]
    assert http.get("/health").json()["queued"] == 0


def test_token_id_prompts_are_measured_before_they_are_looked_at(http, served, monkeypatch):
    _, state = served

    def never(*args, **kwargs):
        raise AssertionError("a prompt longer than the context was tokenized")

    monkeypatch.setattr(state.engine, "encode_prompt", never)
    # Out-of-vocabulary ids, and more of them than the context: the length is what is reported.
    response = http.post("/v1/completions", json={"model": MODEL, "prompt": [10**9] * 5000})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_client_leaving_a_chat_stream_with_usage_is_no_server_error(loaded, monkeypatch):
    """Driven as raw ASGI (spec 2.4, as uvicorn's httptools protocol): the response does not
    watch for the disconnect itself, so only our watcher ends the stream, deterministically."""
    engine = Engine(loaded, max_batch_size=1)
    gate = GatedStep(engine)
    monkeypatch.setattr(engine, "step", gate)
    app = create_app(engine, MODEL)
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "1+1="}],
        "max_tokens": 50,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body = json.dumps(request).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    sent, events = [], []

    async def exchange():
        gone = asyncio.Event()

        async def receive():
            if not events:
                events.append("body")
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                gone.set()  # the client reads the first event and hangs up

        async with app.router.lifespan_context(app):
            try:
                await asyncio.wait_for(app(scope, receive, send), 20)
            finally:
                gate.open.set()

    asyncio.run(exchange())
    assert sent[0]["status"] == 200
    assert b"usage" not in b"".join(message.get("body", b"") for message in sent[1:])


SMALL = HttpLimits(
    max_body_bytes=2000, request_timeout_s=1.0, keep_alive_s=1, max_header_bytes=4096, max_connections=50
)


@pytest.fixture(scope="module")
def small_limits(loaded):
    with running_server(loaded, limits=SMALL) as (url, _, _):
        yield url


def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed(small_limits):
    request = {"model": MODEL, "prompt": "x" * 3000}
    with httpx.Client(base_url=small_limits, timeout=10) as http:
        declared = http.post("/v1/completions", json=request)  # Content-Length says it all
        streamed = http.post(
            "/v1/completions",
            content=iter([json.dumps(request).encode()]),
            headers={"content-type": "application/json"},
        )  # chunked: counted while read
        for response in (declared, streamed):
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert error["code"] == "request_too_large" and "2,000 bytes" in error["message"]
        assert http.post("/v1/completions", json={"model": MODEL, "prompt": "1+1=", "max_tokens": 2}).status_code == 200


def _raw_connection(url):
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    return connection


def _read_until_closed(connection):
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_clients_are_cut_off(small_limits):
    # A request head sent a piece at a time never completes: the connection is closed.
    with _raw_connection(small_limits) as slow_head:
        slow_head.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        assert _read_until_closed(slow_head) == b""
        assert time.monotonic() - start < 5
    # A body that stops half-way gets a 408 in OpenAI's shape.
    with _raw_connection(small_limits) as slow_body:
        slow_body.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model":'
        )
        reply = _read_until_closed(slow_body)
        assert reply.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in reply.replace(b" ", b"")


def test_uvicorn_gets_the_connection_limits(loaded):
    app = create_app(Engine(loaded, max_batch_size=1), MODEL, limits=SMALL)
    with socket.socket() as sock:
        config = uvicorn_server(app, sock, limits=SMALL).config
    assert (config.limit_concurrency, config.timeout_keep_alive, config.h11_max_incomplete_event_size) == (50, 1, 4096)
    assert config.http.__name__ == "HeadTimeoutH11Protocol"


def test_an_moe_model_serves_what_it_generates(tiny_moe_run):
    """A mixture-of-experts checkpoint behind the OpenAI-compatible server: decode routes each token."""
    loaded = load_model(tiny_moe_run)
    request = GenerationRequest(PROMPTS[0], ("direct",), SamplingParams(max_new_tokens=8))
    offline = Engine(loaded).generate([request])[0]
    with running_server(loaded) as (url, _, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        response = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert response.choices[0].text == offline.text
