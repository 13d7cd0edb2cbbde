"""The model against closed-form and self-consistency oracles: cached decoding equals a full forward,
grouped-query attention equals multi-head attention with shared key/value heads."""

import torch

from lmforge.model.config import ModelConfig
from lmforge.model.transformer import KVCache, Transformer


def _model(**kw):
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kw.pop("kv", 2), max_position_embeddings=32, **kw)
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def test_kv_cache_matches_full_forward():
    model = _model()
    x = torch.randint(0, 97, (1, 20))
    full = model(x)
    cache = KVCache(model.config, 1, 20, torch.float32)
    pieces = [model(x[:, :7], cache=cache)]          # prefill
    pieces.append(model(x[:, 7:12], cache=cache))   # a chunk after a filled cache
    for t in range(12, 20):                          # one token at a time
        pieces.append(model(x[:, t:t + 1], cache=cache))
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


def test_grouped_query_equals_multi_head_with_shared_heads():
    gqa = _model(kv=2)
    mha = _model(kv=4)
    sd = gqa.state_dict()
    for i in range(2):
        for name in ("k_proj", "v_proj"):
            w = sd[f"layers.{i}.self_attn.{name}.weight"].view(2, 16, 64)
            sd[f"layers.{i}.self_attn.{name}.weight"] = w.repeat_interleave(2, 0).reshape(64, 64)
    mha.load_state_dict(sd)
    x = torch.randint(0, 97, (2, 16))
    assert torch.allclose(gqa(x), mha(x), atol=1e-5)


def test_untied_and_tied_embeddings():
    tied, untied = _model(), _model(tie_word_embeddings=False)
    assert tied.lm_head.weight.data_ptr() == tied.embed_tokens.weight.data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.embed_tokens.weight.data_ptr()


def test_loss_of_uniform_model_is_log_vocab():
    from lmforge.train.loss import cross_entropy_sum

    model = _model()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: zero logits everywhere -> uniform distribution
    x = torch.randint(0, 97, (2, 10))
    loss = cross_entropy_sum(model(x), x) / x.numel()
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 1e-5


def test_config_parameter_count_matches_module():
    for tie in (True, False):
        model = _model(tie_word_embeddings=tie)
        assert model.config.num_parameters() == sum(p.numel() for p in model.parameters())
