"""A thin wrapper over Hugging Face `tokenizers`: byte-level BPE with our special tokens.

Glossary
  id      an integer token id in [0, V)
  piece   the text one token stands for; the pieces of a sequence join to its decoded text
  special <pad>, <mask>, <bos>, <eos>: ids 0..3 in every tokenizer we train; never data

Byte-level BPE maps every byte to one printable character first (so any UTF-8 text, and any
byte sequence, is representable with no unknown token), then merges frequent pairs. A token may
therefore end in the middle of a multi-byte character; `pieces` hands such bytes to the token
that completes the character, so the UI can show tokens one by one and their concatenation is
exactly `decode(ids)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIALS: tuple[str, ...] = ("<pad>", "<mask>", "<bos>", "<eos>")
PAD, MASK, BOS, EOS = range(4)


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """Printable stand-in character -> byte, the table byte-level BPE uses (GPT-2's scheme).

    Bytes that are printable Latin-1 stand for themselves; the others (controls, space, ...)
    are moved to code points from 256 upwards, in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[str, int] = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks our special tokens."""


class Tokenizer:
    """Byte-level BPE tokenizer with the DiffDraft specials at ids 0..3."""

    def __init__(self, hf: _HFTokenizer) -> None:
        for i, name in enumerate(SPECIALS):
            if hf.token_to_id(name) != i:
                raise TokenizerError(f"tokenizer lacks special token {name!r} at id {i}")
        # text that happens to read "<mask>" is text, never the special token
        hf.encode_special_tokens = True
        self._hf = hf
        self.vocab_size: int = hf.get_vocab_size()
        alphabet = _byte_alphabet()
        # bytes of every token, index = id; specials have none (they are never text)
        self._bytes: list[bytes] = []
        for i in range(self.vocab_size):
            tok = hf.id_to_token(i)
            if i < len(SPECIALS) or tok is None:
                self._bytes.append(b"")
            else:
                self._bytes.append(bytes(alphabet[c] for c in tok))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Tokenizer:
        """Train a byte-level BPE on `texts` (an iterable of documents)."""
        if vocab_size < len(SPECIALS) + 256:
            raise TokenizerError(f"vocab_size must be at least {len(SPECIALS) + 256} (specials + 256 bytes)")
        hf = _HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            hf = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception on bad JSON
            raise TokenizerError(f"tokenizer file {path} is unreadable: {exc}") from exc
        return cls(hf)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        return cls(_HFTokenizer.from_str(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    def to_json(self) -> str:
        # canonical form so that the checkpoint manifest is stable for the same tokenizer
        return json.dumps(json.loads(self._hf.to_str()), sort_keys=True, ensure_ascii=False)

    # -- use ----------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return PAD

    @property
    def mask_id(self) -> int:
        return MASK

    @property
    def bos_id(self) -> int:
        return BOS

    @property
    def eos_id(self) -> int:
        return EOS

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(range(len(SPECIALS)))

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def piece_bytes(self, ids: Sequence[int]) -> list[bytes]:
        """UTF-8 bytes of each token (b"" for specials and unknown ids); joined, the text."""
        return [self._bytes[int(i)] if 0 <= int(i) < self.vocab_size else b"" for i in ids]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Text of each token, such that ''.join(pieces(ids)) == decode(ids).

        A character split across tokens is given to the token holding its last byte; the
        earlier tokens show ''. Invalid byte sequences become U+FFFD, as in `decode`.
        """
        out: list[str] = []
        pending = b""
        for i in ids:
            i = int(i)
            b = self._bytes[i] if 0 <= i < self.vocab_size else b""
            pending += b
            text, pending = _decode_complete(pending)
            out.append(text)
        if pending:
            if out:
                out[-1] += pending.decode("utf-8", errors="replace")
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special tokens are dropped."""
        data = b"".join(self._bytes[int(i)] for i in ids if 0 <= int(i) < self.vocab_size)
        return data.decode("utf-8", errors="replace")


def _decode_complete(data: bytes) -> tuple[str, bytes]:
    """Decode the longest prefix of `data` that does not end inside a UTF-8 character.

    Returns (text, rest) where rest is at most 3 bytes of an unfinished character.
    """
    if not data:
        return "", b""
    # find where a possibly unfinished trailing character starts
    k = len(data) - 1
    back = 0
    while k >= 0 and back < 3 and (data[k] & 0xC0) == 0x80:
        k -= 1
        back += 1
    if k >= 0:
        lead = data[k]
        need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
        if need > 1 and len(data) - k < need:
            return data[:k].decode("utf-8", errors="replace"), data[k:]
    return data.decode("utf-8", errors="replace"), b""
