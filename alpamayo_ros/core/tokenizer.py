"""The Alpamayo-extended Qwen3-VL tokenizer (spec §2.2), built with the ``tokenizers`` library.

Extension, in the reference order: ``<i0>…<i{N-1}>`` as normal added tokens (N = ``traj_vocab_size``,
4000), then the 29 ``<|key|>`` special tokens of the variant's keys (``<|image_pad|>`` already
exists, so 28 new ids; Alpamayo 1.5 named its unused ones ``<|_padding_k|>``, same ids). With the Qwen3-VL base (151669 tokens) this gives ``<i0>`` = 151669 and
vocab 155697; every id is derived from the base size, so a small synthetic base (for tests and tiny
models) gets the same layout shifted down.

CLI: ``python -m alpamayo_ros.core.tokenizer BASE_DIR OUT_DIR [--variant alpamayo1_5]`` (``BASE_DIR`` holds
the Qwen3-VL ``tokenizer.json``) writes ``OUT_DIR/tokenizer.json`` and ``OUT_DIR/token_layout.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from .model_config import (
    QWEN_TOKENS,
    SPECIAL_TOKEN_KEYS,
    VARIANTS,
    TokenLayout,
    new_special_keys,
    special_token,
    variant_for_special_tokens,
)

# The 26 added tokens of the Qwen3-VL base tokenizer, in id order (151643..151668 in the real one).
QWEN_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
)  # fmt: skip
_QWEN_NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}


class TokenizerError(ValueError):
    """The base or extended tokenizer does not have the expected layout."""


@dataclass
class AlpamayoTokenizer:
    """An extended tokenizer together with its verified id layout."""

    tok: Tokenizer
    layout: TokenLayout

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise TokenizerError(f"token {token!r} is not in the tokenizer")
        return int(i)

    @classmethod
    def from_file(cls, path: str | Path, traj_vocab_size: int = 4000, future_bins: int = 3000) -> AlpamayoTokenizer:
        tok = load_tokenizer(path)
        return cls(tok, layout_from_tokenizer(tok, traj_vocab_size, future_bins))

    @classmethod
    def from_base(cls, base: Tokenizer, traj_vocab_size: int = 4000, future_bins: int = 3000,
                  special_keys: tuple[str, ...] = SPECIAL_TOKEN_KEYS) -> AlpamayoTokenizer:
        tok = extend_tokenizer(base, traj_vocab_size, special_keys)
        return cls(tok, layout_from_tokenizer(tok, traj_vocab_size, future_bins))

    @classmethod
    def synthetic(cls, traj_vocab_size: int = 4000, pad_regular_to: int | None = None,
                  future_bins: int = 3000, special_keys: tuple[str, ...] = SPECIAL_TOKEN_KEYS) -> AlpamayoTokenizer:
        """The extended synthetic tokenizer used by tests and tiny models."""
        return cls.from_base(build_synthetic_base_tokenizer(pad_regular_to), traj_vocab_size, future_bins,
                             special_keys)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` (a file, or a directory that contains one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer.json not found: {p}")
    return Tokenizer.from_file(str(p))


def build_synthetic_base_tokenizer(pad_regular_to: int | None = None) -> Tokenizer:
    """A small byte-level BPE tokenizer with the Qwen chat and vision added tokens.

    256 byte tokens (no merges) plus, if ``pad_regular_to`` is given, unreachable filler tokens up to
    that many regular ids (151643 reproduces the real Qwen3-VL id layout), then the 26 Qwen added tokens.
    """
    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    byte_chars.sort(key=ord)
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    n = len(vocab)
    if pad_regular_to is not None:
        if pad_regular_to < n:
            raise ValueError(f"pad_regular_to={pad_regular_to} is below the {n} byte tokens")
        vocab.update({f"<filler_{i}>": i for i in range(n, pad_regular_to)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    for t in QWEN_ADDED_TOKENS:
        tok.add_tokens([AddedToken(t, special=t not in _QWEN_NON_SPECIAL, normalized=False)])
    return tok


def extend_tokenizer(base: Tokenizer, traj_vocab_size: int = 4000,
                     special_keys: tuple[str, ...] = SPECIAL_TOKEN_KEYS) -> Tokenizer:
    """Return a copy of ``base`` with ``<i*>`` and the Alpamayo special tokens added (spec §2.2)."""
    tok = Tokenizer.from_str(base.to_str())
    missing = [t for t in QWEN_TOKENS.values() if tok.token_to_id(t) is None]
    if missing:
        raise TokenizerError(f"base tokenizer lacks the Qwen tokens {missing}; is it a Qwen3-VL tokenizer.json?")
    if tok.token_to_id("<i0>") is not None:
        raise TokenizerError("base tokenizer already contains <i0>: it is already extended")
    base_size = tok.get_vocab_size(with_added_tokens=True)
    # Normal added tokens, as transformers' add_tokens(special_tokens=False) creates them.
    n = tok.add_tokens([AddedToken(f"<i{i}>", special=False, normalized=True) for i in range(traj_vocab_size)])
    if n != traj_vocab_size:
        raise TokenizerError(f"only {n} of {traj_vocab_size} <i*> tokens were new")
    tok.add_special_tokens([AddedToken(special_token(k), special=True, normalized=False) for k in special_keys])
    size = tok.get_vocab_size(with_added_tokens=True)
    want = base_size + traj_vocab_size + len(new_special_keys(special_keys))
    if size != want:
        raise TokenizerError(f"extended vocabulary has {size} tokens, expected {want}")
    return tok


def layout_from_tokenizer(tok: Tokenizer, traj_vocab_size: int = 4000, future_bins: int = 3000) -> TokenLayout:
    """Derive the layout from an extended tokenizer and verify every id against it."""
    i0 = tok.token_to_id("<i0>")
    if i0 is None:
        raise TokenizerError("tokenizer has no <i0>: run prepare-tokenizer on the base tokenizer first")
    qwen = {}
    for key, text in QWEN_TOKENS.items():
        tid = tok.token_to_id(text)
        if tid is None:
            raise TokenizerError(f"tokenizer lacks {text}")
        qwen[key] = int(tid)
    keys = variant_for_special_tokens(lambda text: tok.token_to_id(text) is not None).special_token_keys
    layout = TokenLayout(base_vocab_size=int(i0), traj_vocab_size=traj_vocab_size, future_bins=future_bins,
                         qwen_ids=qwen, special_keys=keys)
    bad = [(t, tok.token_to_id(t), want) for t, want in layout.expected_tokens().items() if tok.token_to_id(t) != want]
    if bad:
        raise TokenizerError(f"{len(bad)} token ids differ from the Alpamayo layout, e.g. {bad[:3]} (token, got, want)")
    if tok.get_vocab_size(with_added_tokens=True) != layout.vocab_size:
        raise TokenizerError(
            f"tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens, layout expects {layout.vocab_size}"
        )
    return layout


def layout_to_dict(layout: TokenLayout) -> dict[str, int]:
    d = {
        "base_vocab_size": layout.base_vocab_size,
        "traj_vocab_size": layout.traj_vocab_size,
        "future_bins": layout.future_bins,
        "traj_token_start_idx": layout.traj_token_start_idx,
        "hist_token_start_idx": layout.hist_token_start_idx,
        "vocab_size": layout.vocab_size,
    }
    d.update({f"{k}_id": int(v) for k, v in layout.qwen_ids.items()})
    d.update({f"{k}_id": layout.special_id(k) for k in new_special_keys(layout.special_keys)})
    return d


def prepare_tokenizer(base_dir: str | Path, out_dir: str | Path, traj_vocab_size: int = 4000,
                      variant: str = "alpamayo_r1") -> TokenLayout:
    """Extend the base ``tokenizer.json`` and write ``tokenizer.json`` + ``token_layout.json`` to out_dir.

    ``variant`` is the model's config.json ``model_type`` (its special-token names)."""
    if variant not in VARIANTS:
        raise TokenizerError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    tok = AlpamayoTokenizer.from_base(load_tokenizer(base_dir), traj_vocab_size,
                                      special_keys=VARIANTS[variant].special_token_keys)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.tok.save(str(out / "tokenizer.json"))
    (out / "token_layout.json").write_text(json.dumps(layout_to_dict(tok.layout), indent=1) + "\n")
    return tok.layout


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="prepare-tokenizer", description=__doc__.splitlines()[0])
    ap.add_argument("base_dir", help="directory (or file) with the base Qwen3-VL tokenizer.json")
    ap.add_argument("out_dir", help="where to write the extended tokenizer.json and token_layout.json")
    ap.add_argument("--traj-vocab-size", type=int, default=4000)
    ap.add_argument("--variant", default="alpamayo_r1", choices=sorted(VARIANTS),
                    help="the model's config.json model_type (Alpamayo 1.5 names its unused special tokens "
                         "<|_padding_k|>)")
    args = ap.parse_args(argv)
    try:
        layout = prepare_tokenizer(args.base_dir, args.out_dir, args.traj_vocab_size, args.variant)
    except (FileNotFoundError, TokenizerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}/tokenizer.json: <i0>={layout.traj_token_start_idx}, vocab_size={layout.vocab_size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
