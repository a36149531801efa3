"""Token ids back to text and character offsets, for trainers that keep only ids.

A process judge grades character spans; a trainer's advantages live on tokens. When the
trainer has the response's token ids but no offsets (verl's ``DataProto`` keeps ids),
:func:`token_offsets` decodes them into the text and each token's ``(start, end)``
characters, which :class:`~exprl_rewards.text.rollout.Rollout` takes as ``token_offsets``.

Three paths, fastest first; each is exact or hands over to the next:

1. **Byte-level BPE** (GPT-2, Llama 3, Qwen, SmolLM2: a fast tokenizer whose decoder is
   ``ByteLevel``): each token's bytes come from the vocabulary, so offsets are a cumulative
   sum. Used only when the bytes decode to exactly what the tokenizer decodes.
2. **Windows**: a token's text is what decoding it adds after the ``window`` tokens before
   it (one batched call to a fast tokenizer's Rust backend). Used when the pieces add up
   to the full decode.
3. **Prefixes**: decode every prefix (exact for any tokenizer, quadratic).

On every path a character made of several byte tokens belongs to the token that
completes it (the tokens before it get empty spans).

Decoding skips special tokens (EOS gets an empty span), as the tokenizer's backend does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["token_offsets"]

Offsets = list[tuple[int, int]]


def token_offsets(tokenizer: Any, ids: Sequence[int], *, window: int = 8) -> tuple[str, Offsets]:
    """The decoded text and each token's ``(start, end)`` characters in it.

    Args:
        tokenizer: a Hugging Face tokenizer (fast ones take the quick paths), or any
            ``decode(ids) -> str`` callable.
        ids: the response's token ids.
        window: tokens of left context when decoding one token (path 2).

    >>> token_offsets(lambda ids: "".join(chr(97 + i) for i in ids), [0, 1, 2])
    ('abc', [(0, 1), (1, 2), (2, 3)])
    """
    # A fast HF tokenizer's Rust backend decodes without the Python side's clean-up of
    # spaces, which would make the pieces disagree with the whole.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decode: Callable[[list[int]], str] = getattr(
        backend, "decode", getattr(tokenizer, "decode", tokenizer)
    )
    ids = [int(i) for i in ids]
    text = decode(ids)
    table = _byte_table(backend) if backend is not None else None
    if table is not None and ids and max(ids) < len(table[0]):
        offsets = _byte_offsets(table, ids, text)
        if offsets is not None:
            return text, offsets
    offsets = _window_offsets(backend, decode, ids, window)
    if offsets and offsets[-1][1] == len(text):
        return text, offsets
    return text, _prefix_offsets(decode, ids)


# --- path 1: byte-level BPE ---------------------------------------------------------


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, reversed."""
    visible = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(visible)
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(visible, chars, strict=True)}


Table = tuple[list[bytes], npt.NDArray[np.int64]]
_TABLES: dict[int, tuple[Any, Table | None]] = {}  # id(backend) -> (backend, table)


def _byte_table(backend: Any) -> Table | None:
    """Each id's bytes and byte length, for a byte-level backend; else None."""
    entry = _TABLES.get(id(backend))
    if entry is None or entry[0] is not backend:  # holding the backend keeps its id unique
        entry = _TABLES[id(backend)] = (backend, _build_table(backend))
    return entry[1]


def _build_table(backend: Any) -> Table | None:
    decoder = getattr(backend, "decoder", None)
    if type(decoder).__name__ != "ByteLevel":
        return None
    reverse = _byte_decoder()
    added = backend.get_added_tokens_decoder()
    pieces: list[bytes] = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        token = added.get(i)
        if token is not None:
            pieces.append(b"" if token.special else token.content.encode())
            continue
        name = backend.id_to_token(i)
        try:
            pieces.append(bytes(reverse[c] for c in name) if name is not None else b"")
        except KeyError:  # not a byte-level vocabulary after all
            return None
    return pieces, np.array([len(p) for p in pieces], dtype=np.int64)


def _byte_offsets(table: Table, ids: list[int], text: str) -> Offsets | None:
    pieces, lengths = table
    raw = b"".join(pieces[i] for i in ids)
    try:
        if raw.decode("utf-8") != text:
            return None  # the tokenizer rewrites text (normalizer, clean-up): not ours
    except UnicodeDecodeError:  # a cut multi-byte character: decode() replaced it
        return None
    token_end = np.cumsum(lengths[ids])  # byte offset where each token ends
    char_bytes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    char_len = 1 + (char_bytes >= 0x80) + (char_bytes >= 0x800) + (char_bytes >= 0x10000)
    char_end = np.cumsum(char_len)  # byte offset where each character ends
    ends = np.searchsorted(char_end, token_end, side="right")  # characters complete by then
    starts = np.concatenate(([0], ends[:-1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


# --- paths 2 and 3 ------------------------------------------------------------------

# What decode() writes for a character whose bytes are not all there yet; the character
# belongs to the token that completes it, as on path 1.
_CUT = "\ufffd"


def _window_offsets(
    backend: Any, decode: Callable[[list[int]], str], ids: list[int], window: int
) -> Offsets:
    batch: Callable[[list[list[int]]], list[str]] | None = getattr(backend, "decode_batch", None)
    windows = [ids[max(0, i - window) : i + 1] for i in range(len(ids))]
    heads = [w[:-1] for w in windows]
    texts = batch(windows + heads) if batch is not None else [decode(w) for w in windows + heads]
    offsets, position = [], 0
    for full, head in zip(texts[: len(ids)], texts[len(ids) :], strict=True):
        full, head = full.rstrip(_CUT), head.rstrip(_CUT)  # a character still incomplete
        piece = len(full) - len(head) if full.startswith(head) else len(full)
        offsets.append((position, position + piece))
        position += piece
    return offsets


def _prefix_offsets(decode: Callable[[list[int]], str], ids: list[int]) -> Offsets:
    offsets, position = [], 0
    for i in range(len(ids)):
        prefix = decode(ids[: i + 1])
        end = max(position, len(prefix if i == len(ids) - 1 else prefix.rstrip(_CUT)))
        offsets.append((position, end))
        position = end
    return offsets
