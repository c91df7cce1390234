"""Packing prompts of different lengths into rows of one width, so a batch carries no padding.

Short prompts padded to a batch's longest waste the compute spent on padding (prompts of 8-12
tokens padded to 12 waste ~17%, padded to a multiple of 8 ~30%), and every distinct width is
another compile. Packed, several prompts share a row (`forward(..., segments=...)` keeps each one
to its own keys and positions), every call has one shape, and only the rows' tails are padding.

    plan = pack(lengths, batch_size=32, pad_to_multiple=8, max_width=1024, key_cost=2e-4)
    for call in plan.calls():
        tokens, segments = call.arrays(ids, pad_id)      # [rows, width] each
        h = run(tokens, segments)                         # [..., rows, width, ...]
        out[..., call.prompt, call.pos] = h[..., call.row, call.slot]
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Call:
    """One forward pass: `rows` rows of `width` slots.

    prompt, pos, row, slot: int `[tokens]` each, where every real token of this call's prompts
      comes from (prompt index, position in the prompt) and goes to (row, slot).
    segment: int `[tokens]`, each token's segment id: k for the k-th prompt of its row (from 1).
    """

    rows: int
    width: int
    prompt: np.ndarray
    pos: np.ndarray
    row: np.ndarray
    slot: np.ndarray
    segment: np.ndarray

    def arrays(self, ids: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids `[rows, width]` and segment ids `[rows, width]` (0 = padding, k > 0 = the
        row's k-th prompt) from `ids [n, >= longest]` (right-padded prompts)."""
        tokens = np.full((self.rows, self.width), pad_id, np.int32)
        segments = np.zeros((self.rows, self.width), np.int32)
        tokens[self.row, self.slot] = ids[self.prompt, self.pos]
        segments[self.row, self.slot] = self.segment
        return tokens, segments


@dataclasses.dataclass(frozen=True)
class Plan:
    """Prompts packed into `len(rows)` rows of `width` slots, run `rows_per_call` rows at a time
    (the last call topped up with empty rows, so every call has one shape)."""

    width: int
    rows_per_call: int
    rows: tuple[tuple[int, ...], ...]
    lengths: np.ndarray

    @property
    def n_calls(self) -> int:
        return -(-len(self.rows) // self.rows_per_call)

    @property
    def slots(self) -> int:
        """Token slots computed in all: calls x rows_per_call x width."""
        return self.n_calls * self.rows_per_call * self.width

    @property
    def fill(self) -> float:
        """Share of computed slots that hold a real token."""
        return float(self.lengths.sum()) / self.slots

    def calls(self) -> list[Call]:
        out = []
        for c in range(self.n_calls):
            members = self.rows[c * self.rows_per_call : (c + 1) * self.rows_per_call]
            prompt, pos, row, slot, segment = [], [], [], [], []
            for r, mem in enumerate(members):
                offset = 0
                for k, i in enumerate(mem, start=1):
                    n_tok = int(self.lengths[i])
                    prompt.append(np.full(n_tok, i))
                    pos.append(np.arange(n_tok))
                    row.append(np.full(n_tok, r))
                    slot.append(offset + np.arange(n_tok))
                    segment.append(np.full(n_tok, k))
                    offset += n_tok
            cat = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
            out.append(
                Call(
                    rows=self.rows_per_call,
                    width=self.width,
                    prompt=cat(prompt),
                    pos=cat(pos),
                    row=cat(row),
                    slot=cat(slot),
                    segment=cat(segment),
                )
            )
        return out

    def record(self) -> dict:
        """JSON-able summary for run metadata."""
        return {
            "width": self.width,
            "rows": len(self.rows),
            "rows_per_call": self.rows_per_call,
            "calls": self.n_calls,
            "tokens": int(self.lengths.sum()),
            "slots": self.slots,
            "fill": round(self.fill, 4),
        }


def best_fit_decreasing(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Prompt indices per row: longest prompt first, each into the row it fills most tightly
    (a new row when none has room). Every row's total length is <= `width`."""
    if int(np.max(lengths)) > width:
        raise ValueError(f"width: {width} is shorter than the longest prompt ({max(lengths)})")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # sorted (free slots, row) of rows that still have room
    for i in order:
        n_tok = int(lengths[i])
        j = bisect.bisect_left(room, (n_tok, -1))
        if j < len(room):
            free, r = room.pop(j)
            rows[r].append(int(i))
        else:
            free, r = width, len(rows)
            rows.append([int(i)])
        if free - n_tok > 0:
            bisect.insort(room, (free - n_tok, r))
    return rows


def pack(
    lengths,
    batch_size: int,
    pad_to_multiple: int = 8,
    max_width: int | None = None,
    key_cost: float = 0.0,
) -> Plan:
    """Choose a row width and pack `lengths` ([n] tokens per prompt) into rows.

    Widths tried: multiples of `pad_to_multiple` from the longest prompt up to twice it (at
    least 64), at most `max_width`; the one with the least estimated compute wins, where a row
    of width w costs w * (1 + key_cost * w) (`key_cost`: one attention key's cost per token
    relative to the token's matmuls, since every query of a row scores every slot of it).
    Rows per call: about `batch_size` prompts' tokens, spread evenly over the calls.
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.ndim != 1 or len(lengths) == 0 or lengths.min() < 1:
        raise ValueError("lengths: need a non-empty list of prompt lengths >= 1")
    if batch_size < 1 or pad_to_multiple < 1:
        raise ValueError(
            f"batch_size/pad_to_multiple: need >= 1, got {batch_size}/{pad_to_multiple}"
        )
    longest = int(lengths.max())
    lo = -(-longest // pad_to_multiple) * pad_to_multiple
    hi = max(lo, 2 * longest, 64)
    if max_width is not None:
        if longest > max_width:
            raise ValueError(f"lengths: a prompt of {longest} tokens exceeds {max_width}")
        lo, hi = min(lo, max_width), min(hi, max_width)
    widths = sorted({lo, *range(lo, hi + 1, pad_to_multiple)})
    if len(widths) > 16:  # keep planning cheap for long prompts
        widths = sorted({widths[int(k)] for k in np.linspace(0, len(widths) - 1, 16)})
    target = batch_size * float(lengths.mean())
    best = None
    for w in widths:
        rows = best_fit_decreasing(lengths, w)
        per_call = int(np.clip(round(target / w), 1, len(rows)))
        n_calls = -(-len(rows) // per_call)
        per_call = -(-len(rows) // n_calls)  # same number of calls, least topping up
        cost = n_calls * per_call * w * (1.0 + key_cost * w)
        if best is None or cost < best[0]:
            best = (cost, Plan(w, per_call, tuple(tuple(r) for r in rows), lengths))
    return best[1]
