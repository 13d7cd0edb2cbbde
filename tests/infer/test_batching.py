"""The engine's continuous batching against one-at-a-time runs, its sampling filters against closed forms,
stop strings, streaming, cancellation, context limits and embeddings."""

import threading

import pytest
import torch

from lmforge.errors import RequestError
from lmforge.infer.engine import Engine, end_ids, prompt_ids
from lmforge.infer.local import LocalModel, load
from lmforge.infer.sampling import SamplingParams, StopStrings, pick

PROMPTS = ["def ", "import os\nimport sys\n\n\ndef main(argv):\n    ", "class Parser(object):\n    \"\"\"",
           "x", "for i in range(10):\n", "    return self._", "# Copyright 2001 Python Software Foundation\n",
           "try:\n    import _thread\nexcept ImportError:\n    "]


@pytest.fixture(scope="module")
def model(trained_model):
    return load(trained_model)


def _alone(model, prompt, **sampling):
    return LocalModel(model.model, model.tokenizer, path=model.path, max_batch=1).generate(prompt, **sampling)


def test_batched_greedy_equals_one_at_a_time(model):
    """Prompts of different lengths in one batch (each at its own position in its own cache slot) give the
    greedy text each gives alone; with fewer slots than prompts, requests join as others leave."""
    alone = [_alone(model, p, max_tokens=40, temperature=0) for p in PROMPTS]
    assert model.generate(PROMPTS, max_tokens=40, temperature=0) == alone
    narrow = LocalModel(model.model, model.tokenizer, path=model.path, max_batch=3)
    assert narrow.generate(PROMPTS, max_tokens=40, temperature=0) == alone
    assert narrow.engine.decoded_rows / narrow.engine.steps > 2  # decode steps were shared, not one per request


def test_compiled_static_decode_equals_eager_and_compiles_once(model):
    """torch.compile over the static-shape step (every slot, every cached position, masked) gives the eager
    engine's greedy text for prompts of different lengths joining and leaving, without recompiling."""
    alone = [_alone(model, p, max_tokens=24, temperature=0) for p in PROMPTS[:5]]
    compiled = LocalModel(model.model, model.tokenizer, path=model.path, max_batch=3, compile=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert compiled.generate(PROMPTS[:5], max_tokens=24, temperature=0) == alone
        assert compiled.generate(PROMPTS[5], max_tokens=8, temperature=0) == _alone(model, PROMPTS[5], max_tokens=8,
                                                                                  temperature=0)
    assert compiled.engine._compiled is not None  # it ran compiled, not fallen back to eager


def test_seeded_sampling_does_not_depend_on_the_batch(model):
    kw = dict(max_tokens=30, temperature=1.0, top_p=0.9, seed=11)
    alone = [_alone(model, p, **kw) for p in PROMPTS[:4]]
    assert model.generate(PROMPTS[:4], **kw) == alone
    assert model.generate(PROMPTS[0], **{**kw, "seed": 12}) != alone[0]


def test_greedy_equals_argmax_of_full_forward(model):
    """The cached, batched path against recomputing the whole sequence each step without a cache."""
    ids = prompt_ids(model.tokenizer, PROMPTS[1])
    engine = Engine(model.model, model.tokenizer, max_batch=4)
    requests = [engine.submit(prompt_ids(model.tokenizer, p), SamplingParams(max_tokens=25, temperature=0))
                for p in PROMPTS[:3]]
    engine.run(requests)
    seq = list(ids)
    with torch.no_grad():
        for _ in range(25):
            seq.append(int(model.model(torch.tensor([seq]))[0, -1].argmax()))
    got = requests[1].tokens
    assert got == seq[len(ids):len(ids) + len(got)]


def test_min_p_keeps_tokens_above_a_share_of_the_likeliest():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0, min_p=0.4)  # keep p >= 0.4 * 0.5 = 0.2: tokens 0 and 1
    draws = [pick(logits, params, g) for _ in range(2000)]
    assert set(draws) == {0, 1}
    assert abs(draws.count(0) / len(draws) - 0.5 / 0.8) < 0.03  # renormalised over the survivors


def test_stop_strings_are_found_across_pieces_and_never_leak():
    s = StopStrings(("</s>",))
    assert s.feed("ab") == ("ab", False)
    assert s.feed("c<") == ("c", False)          # "<" might begin the stop string: held back
    assert s.feed("/") == ("", False)
    assert s.feed("s>tail") == ("", True)        # the stop string completes: nothing after it is released
    t = StopStrings(("</s>",))
    assert t.feed("x<") == ("x", False) and t.feed("y") == ("<y", False)  # a false alarm is released
    assert StopStrings(("\n\n", "END")).feed("a\n\nEND") == ("a", True)   # the earliest stop wins


def test_stop_string_ends_generation_before_it(model):
    full = model.generate(PROMPTS[2], max_tokens=40, temperature=0)
    at = next(i for i in range(3, len(full) - 2) if full.find(full[i:i + 2]) == i)  # a 2-character string's first place
    stop = full[at:at + 2]
    engine = model.engine
    request = engine.submit(prompt_ids(model.tokenizer, PROMPTS[2]),
                            SamplingParams(max_tokens=40, temperature=0, stop=(stop,)), heal=True)
    engine.run([request])
    assert request.text == full[:at] and request.finish_reason == "stop"


def test_stream_pieces_join_to_the_generated_text(model):
    pieces = list(model.stream(PROMPTS[2], max_tokens=30, temperature=0))
    assert len(pieces) > 5 and "".join(pieces) == model.generate(PROMPTS[2], max_tokens=30, temperature=0)


def test_length_and_end_tokens_finish_requests(model):
    engine = model.engine
    r = engine.submit(prompt_ids(model.tokenizer, "def "), SamplingParams(max_tokens=7, temperature=0))
    engine.run([r])
    assert r.finish_reason == "length" and len(r.tokens) == 7
    # plant the end: make the greedy first token an end token and the request stops at once, writing nothing
    first = r.tokens[0]
    stopping = Engine(model.model, model.tokenizer, stop_ids={first})
    r2 = stopping.submit(prompt_ids(model.tokenizer, "def "), SamplingParams(max_tokens=7, temperature=0))
    stopping.run([r2])
    assert r2.finish_reason == "stop" and r2.tokens == [] and r2.text == ""
    assert model.tokenizer.eos_id in end_ids(model.tokenizer, model.path)


def test_cancel_frees_the_slot_and_others_go_on(model):
    engine = Engine(model.model, model.tokenizer, max_batch=2).start()
    try:
        ids = prompt_ids(model.tokenizer, PROMPTS[0])
        long = engine.submit(ids, SamplingParams(max_tokens=200, temperature=0))
        next(long.chunks(timeout=30))
        long.cancel()
        assert long.finished.wait(30) and long.finish_reason == "cancelled"
        short = [engine.submit(ids, SamplingParams(max_tokens=5, temperature=0)) for _ in range(2)]
        for r in short:
            assert r.finished.wait(30) and r.finish_reason == "length"
        assert engine._free == [0, 1]
    finally:
        engine.close()


def test_32_concurrent_requests_through_the_engine_thread(model):
    """Requests submitted from many threads at once all complete, each with its own-run text."""
    expected = {p: _alone(model, p, max_tokens=20, temperature=0) for p in PROMPTS}
    engine = Engine(model.model, model.tokenizer, max_batch=8, stop_ids=end_ids(model.tokenizer)).start()
    results: dict[int, str] = {}

    def client(i):
        p = PROMPTS[i % len(PROMPTS)]
        r = engine.submit(prompt_ids(model.tokenizer, p), SamplingParams(max_tokens=20, temperature=0), heal=True)
        r.finished.wait(60)
        results[i] = r.text

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        engine.close()
    assert len(results) == 32
    assert all(results[i] == expected[PROMPTS[i % len(PROMPTS)]] for i in range(32))
    assert engine.decoded_rows / engine.steps > 4  # batched: most steps advanced many requests


def test_requests_that_do_not_fit_the_context_are_refused(model):
    engine = model.engine
    with pytest.raises(RequestError, match="context") as e:
        engine.submit([1] * model.context_length, SamplingParams(max_tokens=1))
    assert e.value.param == "prompt"
    with pytest.raises(RequestError, match="exceeds") as e:
        engine.submit([1] * 10, SamplingParams(max_tokens=model.context_length))
    assert e.value.param == "max_tokens"


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(max_tokens=-3), dict(temperature=-1), dict(top_p=0),
                                 dict(top_k=-1), dict(min_p=1.5), dict(repetition_penalty=0), dict(stop=("",))])
def test_bad_sampling_values_name_the_field(bad):
    with pytest.raises(RequestError) as e:
        SamplingParams(**bad)
    assert e.value.param == next(iter(bad))


def test_embed_is_the_mean_of_hidden_states_and_padding_changes_nothing(model):
    texts = ["def f(x):\n    return x\n", "import os", "class A:\n    pass\n\n\nclass B(A):\n    pass\n"]
    batch = model.embed(texts, normalize=False)
    assert batch.shape == (3, model.model.config.hidden_size)
    for i, t in enumerate(texts):
        ids = torch.tensor([prompt_ids(model.tokenizer, t)])
        with torch.no_grad():
            manual = model.model.hidden(ids)[0].mean(0)
        torch.testing.assert_close(batch[i], manual, rtol=1e-5, atol=1e-5)
    unit = model.embed(texts)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))
    assert float(unit[0] @ unit[0]) > float(unit[0] @ unit[1])


def test_chat_prompt_is_the_tokenizers_template_with_a_generation_prompt(model):
    tok = model.tokenizer
    messages = [{"role": "user", "content": "hi"}]
    assert model.chat_prompt("hi") == tok.encode_chat(messages, add_generation_prompt=True)
    with_system = model.chat_prompt(messages, system="be brief")
    assert with_system == tok.encode_chat([{"role": "system", "content": "be brief"}, *messages],
                                          add_generation_prompt=True)
    assert isinstance(model.chat("hi", max_tokens=5, temperature=0), str)
