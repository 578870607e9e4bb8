"""A recipe's ``path: some.gguf`` on a tiny real GGUF (written here with the ``gguf`` package: a 2-layer Qwen2 with
seeded random weights, some Q8_0, some F16, some F32, and a byte-level BPE tokenizer in its metadata): it converts
once into the cache, loads as the model the file holds (logits equal to a transformers Qwen2 built directly from the
same dequantized weights), with its tokenizer; a GGUF without ``output.weight`` ties its head to the embedding; a cut
or damaged file, or one that leaves a weight unset, fails in one line and leaves nothing in the cache. The real
491 MB model is the "real" tier's (tests/test_real.py)."""

import numpy as np
import pytest
import torch

from reasoner.backends import SamplingParams, load_lm, sources

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, EPS, THETA = 64, 128, 2, 4, 2, 1e-6, 10000.0
HEAD_DIM = HIDDEN // HEADS
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "a t", "Ġ c"]  # best first
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPELLING = bytes_to_unicode()
TOKENS = [SPELLING[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES] + SPECIALS
VOCAB = len(TOKENS)
EOS = TOKENS.index("<|im_end|>")
KV = KV_HEADS * HEAD_DIM
# each weight: its transformers name, its GGUF name, how the file stores it, its shape
OUTER = [
    ("model.embed_tokens.weight", "token_embd.weight", Q.Q8_0, (VOCAB, HIDDEN)),
    ("model.norm.weight", "output_norm.weight", Q.F32, (HIDDEN,)),
    ("lm_head.weight", "output.weight", Q.F16, (VOCAB, HIDDEN)),
]
LAYER = [
    ("input_layernorm.weight", "attn_norm.weight", Q.F32, (HIDDEN,)),
    ("self_attn.q_proj.weight", "attn_q.weight", Q.Q8_0, (HIDDEN, HIDDEN)),
    ("self_attn.q_proj.bias", "attn_q.bias", Q.F32, (HIDDEN,)),
    ("self_attn.k_proj.weight", "attn_k.weight", Q.F16, (KV, HIDDEN)),
    ("self_attn.k_proj.bias", "attn_k.bias", Q.F32, (KV,)),
    ("self_attn.v_proj.weight", "attn_v.weight", Q.F32, (KV, HIDDEN)),
    ("self_attn.v_proj.bias", "attn_v.bias", Q.F32, (KV,)),
    ("self_attn.o_proj.weight", "attn_output.weight", Q.F16, (HIDDEN, HIDDEN)),
    ("post_attention_layernorm.weight", "ffn_norm.weight", Q.F32, (HIDDEN,)),
    ("mlp.gate_proj.weight", "ffn_gate.weight", Q.Q8_0, (FFN, HIDDEN)),
    ("mlp.up_proj.weight", "ffn_up.weight", Q.F32, (FFN, HIDDEN)),
    ("mlp.down_proj.weight", "ffn_down.weight", Q.Q8_0, (HIDDEN, FFN)),
]
LAYOUT = OUTER + [
    (f"model.layers.{i}.{hf}", f"blk.{i}.{gg}", kind, shape) for i in range(LAYERS) for hf, gg, kind, shape in LAYER
]
PROMPT = " the cat sat on the mat"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_gguf(path, seed: int, drop=()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Write a tiny Qwen2 GGUF at ``path``, without the tensors named in ``drop`` (GGUF names). Returns the weights
    a correct loader must end up with (stored values, dequantized with gguf's own reference code) and the weights
    before quantization, both under transformers' names."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_name("tiny-qwen2")
    writer.add_context_length(256)
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_rope_freq_base(THETA)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(TOKENS)
    writer.add_token_types([1] * (VOCAB - len(SPECIALS)) + [3] * len(SPECIALS))  # 1 normal, 3 control
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(TOKENS.index("<|endoftext|>"))
    writer.add_eos_token_id(EOS)
    writer.add_pad_token_id(TOKENS.index("<|endoftext|>"))
    writer.add_chat_template(CHAT_TEMPLATE)
    stored, original = {}, {}
    for name, gguf_name, kind, shape in LAYOUT:
        if gguf_name in drop:
            continue
        value = rng.standard_normal(shape).astype(np.float32) * (0.1 if len(shape) == 1 else 0.3)
        if name.endswith("norm.weight"):
            value += 1.0
        original[name] = torch.from_numpy(value)
        if kind == Q.Q8_0:
            data = gguf.quants.quantize(value, Q.Q8_0)
            loaded = gguf.quants.dequantize(data, Q.Q8_0)
        elif kind == Q.F16:
            data = value.astype(np.float16)
            loaded = data.astype(np.float32)
        else:
            data = loaded = value
        writer.add_tensor(gguf_name, data, raw_dtype=kind if kind == Q.Q8_0 else None)
        stored[name] = torch.from_numpy(np.ascontiguousarray(loaded, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored, original


def reference_model(weights: dict[str, torch.Tensor], tied: bool) -> Qwen2ForCausalLM:
    """The model the file holds, built by transformers from its weights directly (no GGUF involved)."""
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=EPS,
        rope_theta=THETA,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
    )
    model = Qwen2ForCausalLM(config).eval()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if tied else set())
    if tied:
        model.tie_weights()
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    untied = write_gguf(folder / "tiny.gguf", seed=0)
    tied = write_gguf(folder / "tiny-tied.gguf", seed=1, drop={"output.weight"})  # the model ties its head
    write_gguf(folder / "tiny-unmapped.gguf", seed=2, drop={"blk.1.ffn_up.weight"})
    return {"folder": folder, "untied": untied, "tied": tied}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def conversions(monkeypatch):
    """The GGUFs converted (the real conversion, counted)."""
    calls, real = [], sources._dequantize

    def counted(gguf_file, out):
        calls.append(gguf_file.name)
        real(gguf_file, out)

    monkeypatch.setattr(sources, "_dequantize", counted)
    return calls


def leftovers(cache) -> list[str]:
    """What the cache's converted models hold: a final folder or a partial one."""
    converted = cache / "converted"
    return sorted(p.name for p in converted.iterdir()) if converted.exists() else []


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def greedy(model, ids: list[int], steps: int) -> list[int]:
    out = []
    for _ in range(steps):
        out.append(int(logits(model, ids + out)[-1].argmax()))
        if out[-1] == EOS:
            break
    return out


def test_a_gguf_path_converts_once_and_loads_as_the_model_it_holds(files, cache, conversions):
    stored, original = files["untied"]
    path = files["folder"] / "tiny.gguf"
    lm = load_lm("transformers", str(path), "target", device="cpu", max_batch_size=2)
    assert conversions == ["tiny.gguf"]
    # the same file again, as a path or beside its folder (recipe `gguf_file:`), is the conversion already made
    again = load_lm("transformers", str(files["folder"]), "target", gguf_file="tiny.gguf", device="cpu")
    assert conversions == ["tiny.gguf"]
    converted = list((cache / "converted").iterdir())
    assert [c.name for c in converted] == [sources.file_sha256(path)] and (converted[0] / "config.json").is_file()
    assert again.name == lm.name == str(converted[0])

    # the tokenizer the file describes: its merges (best first), control tokens whole, any text back unchanged
    assert lm.encode(" the") == [TOKENS.index("Ġthe")]
    assert lm.encode("<|im_end|>") == [EOS]
    text = "The cat sat on the mat.\n\nÜber 3 € — 'quoted'   spaces\t<|im_end|>"
    assert lm.tokenizer.decode(lm.encode(text)) == text
    # its end of turn ends a generation, and its chat template renders
    assert lm.tokenizer.eos_token == "<|im_end|>" and EOS in lm.eos_ids
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"

    # the model the file holds: Q8_0 and F16 weights dequantized, nothing left quantized, its own head
    assert not lm.model.config.tie_word_embeddings and lm.model.dtype == torch.float32
    assert not hasattr(lm.model.config, "quantization_config")
    reference = reference_model(stored, tied=False)
    ids = lm.encode(PROMPT)
    got = logits(lm.model, ids)
    assert torch.allclose(got, logits(reference, ids), atol=1e-4, rtol=1e-4)
    # the check can tell: the rounding of Q8_0 / F16 alone moves the logits past its tolerance
    assert not torch.allclose(got, logits(reference_model(original, tied=False), ids), atol=1e-4, rtol=1e-4)

    out = lm.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=6))[0][0]
    assert out.token_ids == greedy(reference, ids, 6)
    assert out.text == lm.tokenizer.decode(out.token_ids)


def test_a_gguf_without_output_weight_ties_its_head_to_the_embedding(files, cache, conversions):
    stored, _ = files["tied"]
    lm = load_lm("transformers", str(files["folder"] / "tiny-tied.gguf"), "draft", device="cpu")
    assert conversions == ["tiny-tied.gguf"]
    model, ids = lm.model, lm.encode(PROMPT)
    assert torch.allclose(logits(model, ids), logits(reference_model(stored, tied=True), ids), atol=1e-4, rtol=1e-4)
    assert torch.equal(model.lm_head.weight, stored["model.embed_tokens.weight"])  # the dequantized token_embd
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.config.tie_word_embeddings  # one tensor


@pytest.mark.parametrize("cut", ["header", "metadata", "tensors", "last byte", "magic"])
def test_a_cut_or_damaged_gguf_fails_in_one_line_and_leaves_nothing(files, cache, tmp_path, cut):
    whole = (files["folder"] / "tiny.gguf").read_bytes()
    data = {
        "header": whole[:12],
        "metadata": whole[:2000],
        "tensors": whole[: len(whole) // 2],
        "last byte": whole[:-1],
        "magic": b"GGUX" + whole[4:],
    }[cut]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data)
    with pytest.raises(ValueError, match="not a readable GGUF file") as error:
        load_lm("transformers", str(bad), "target", device="cpu")
    assert str(bad) in str(error.value) and "\n" not in str(error.value)
    assert leftovers(cache) == []  # no final folder, no partial one


def test_a_gguf_that_leaves_a_weight_unset_is_refused_not_converted_with_a_random_one(files, cache, conversions):
    """transformers would initialize the weight at random (a warning once) and the cached conversion would load
    without a word ever after."""
    with pytest.raises(
        ValueError, match=r"does not give 1 of the qwen2 model's weights \(model\.layers\.1\.mlp\.up_proj"
    ):
        load_lm("transformers", str(files["folder"] / "tiny-unmapped.gguf"), "target", device="cpu")
    assert conversions == ["tiny-unmapped.gguf"]
    assert leftovers(cache) == []
