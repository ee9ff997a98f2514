"""An instruction-tuned model's answers: its prompt template, greedy decoding up to the end
marker, many prompts at once, and their scores.

Many prompts are answered together: those whose prompts have the same length share one
generate() call (a batch of up to batch_size rows, the KV cache computing only the new token
each step), so answering the 10,009 held-out numbers of number-translation takes seconds,
not minutes. Greedy decoding of a row does not depend on the other rows of its batch.

Each step's matrix products are small (a few dozen rows of one token each), and BLAS threads
cost more than they bring on them: generation runs on one BLAS thread (threadpoolctl). With
a second process busy on the other core, two threads made the dev numbers' answers 10x slower
(41.8 s against 4.3 s on a 2-core AMD EPYC).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import ConfigError, UserError
from . import scores, tasks


def _prompt_ids(tokenizer, template, example):
    prompt = tasks.format_prompt({"instruction": example["instruction"],
                                  "input": example.get("input", ""), "output": ""}, template)
    try:
        return np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    except UserError as e:
        raise ConfigError(f"the instruction cannot be encoded: {e}") from None


def _cut(ids, end):
    """ids (N,) up to the first occurrence of the id sequence `end`."""
    E = len(end)
    for t in range(len(ids) - E + 1):
        if np.array_equal(ids[t:t + E], end):
            return ids[:t]
    return ids


def respond_batch(model, tokenizer, template, examples, max_new_tokens=80, temperature=0.0,
                  seed=None, batch_size=256):
    """The model's answer to each example ({"instruction", "input"}): its prompt in
    `template`, then up to max_new_tokens generated tokens (KV cache), cut at the end marker.
    temperature 0: greedy. Returns a list of strings, in the order of `examples`."""
    end = tasks.end_ids(tokenizer, template)
    prompts = [_prompt_ids(tokenizer, template, ex) for ex in examples]
    by_length = defaultdict(list)
    for i, ids in enumerate(prompts):
        by_length[len(ids)].append(i)
    answers = [None] * len(examples)
    with threadpool_limits(limits=1, user_api="blas"):
        for length, rows in sorted(by_length.items()):
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                idx = np.stack([prompts[i] for i in chunk])  # (b, length)
                out = model.generate(idx, max_new_tokens, temperature=temperature,
                                     seed=seed)[:, length:]  # (b, max_new_tokens)
                for i, new in zip(chunk, out, strict=True):
                    answers[i] = tokenizer.decode(_cut(new, end)).strip()
    return answers


def respond(model, tokenizer, template, instruction, input="", max_new_tokens=80,
            temperature=0.0, top_k=None, seed=None):
    """The model's answer to one instruction: the prompt in `template`, then generated tokens
    (KV cache) up to the end marker (or max_new_tokens). temperature 0: greedy.

    Returns the response text, without the prompt and the end marker."""
    ids = _prompt_ids(tokenizer, template, {"instruction": instruction, "input": input})
    end = tasks.end_ids(tokenizer, template)
    out = model.generate(ids[None, :], max_new_tokens, temperature=temperature, top_k=top_k,
                         seed=seed)[0, len(ids):]  # (max_new_tokens,) the new tokens
    return tokenizer.decode(_cut(out, end)).strip()


def evaluate_answers(model, tokenizer, template, examples, max_new_tokens):
    """Generate an answer to each example (greedy); score it against the reference output.

    Returns (exact match rate, mean char overlap, rows {instruction, input, reference,
    answer, exact, overlap})."""
    answers = respond_batch(model, tokenizer, template, examples, max_new_tokens)
    rows = [{"instruction": ex["instruction"], "input": ex.get("input", ""),
             "reference": ex["output"], "answer": answer,
             "exact": scores.exact_match(answer, ex["output"]),
             "overlap": scores.char_overlap(answer, ex["output"])}
            for ex, answer in zip(examples, answers, strict=True)]
    if not rows:
        return None, None, rows
    return (float(np.mean([r["exact"] for r in rows])),
            float(np.mean([r["overlap"] for r in rows])), rows)


def exact_match_rate(model, tokenizer, template, examples, max_new_tokens):
    """The share of examples whose greedy answer equals the reference (whitespace aside)."""
    answers = respond_batch(model, tokenizer, template, examples, max_new_tokens)
    hits = [scores.exact_match(a, ex["output"]) for a, ex in zip(answers, examples, strict=True)]
    return float(np.mean(hits)) if hits else None


__all__ = ["respond", "respond_batch", "evaluate_answers", "exact_match_rate"]
