"""`python -m bench.draft_quality`: what a reviewer reads, measured by a fixed judge.

Drafts are written the way a user gets them (a model folder, a template or a free-length draft
with a short prefix, a sampler setting) and only what the model wrote is scored: the slot fills
of a template, the text after the prefix of a free draft. `bench.judge` fits the judge on the
corpus's training split and scores judge perplexity, OOV rate, distinct-2, repeat rate and
unigram entropy (see its docstring). Every row is paired with real test-split text cut to the
same words per fill (`cut_like`), twenty twins per draft from random test reports, scored by the
same judge, and reported as a ratio to it.

Rows
  main     the model's stored sampler settings: every template in --templates, free drafts of
           --free lengths (prefix: the first --prefix-words words of a test report), --drafts
           drafts each (seeds 0..N-1); the real text each row is compared with; with --ar-model,
           the causal transformer writing the same slots (left to right, KV cache); with
           --ar-labels it keeps the template's labels out of them as avoid_labels does
  sweep    --sweep SPEC ... : the quality-against-latency table on --sweep-rows, one line per
           setting. A SPEC is comma-separated SamplerConfig fields, e.g.
           "steps=64,temperature=0.7,temperature_end=0.3,whole_words=1"; a SPEC that sets steps
           sets them for every row, one without them keeps the model's (free_steps on free rows)

Seconds per draft are wall-clock per draft with --threads torch threads (model load excluded).
"changed / step" is the share of free positions whose token changed, per step, averaged over the
last quarter of the steps, and at the last step: how far the draft a reviewer watches still
moves before it is done. "label echo" is the share of a template's fills that contain one of its
own labels of two words or more ("part name", "nature of condition"), beside the same share in
the real text cut to the same shape (SDR reports often carry such fields). "fills ending a
sentence" is the share of fills whose text ends with ". ! ?": a fill that stopped where its text
did rather than at its slot's last position (a model trained with template rows,
engine.slot_data, ends fills with <eos>). Real text has no such figure here: it is cut to the
drafts' word counts as words, without punctuation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.judge import Judge, Scores, cut_like, words
from engine import checkpoint, template
from engine.cli import Parser
from engine.config import SamplerConfig, for_kind, parse_sampler_spec
from engine.sampler import sample
from engine.words import PHRASE_WINDOW, SENTENCE_ENDS, LabelRule

MEASURES = ("ppl", "oov", "distinct2", "repeat", "entropy")
REAL_PER_DRAFT = 20  # real-text twins per draft: the reference is cheap, and one twin each was noisy


@dataclasses.dataclass(frozen=True)
class Job:
    """One kind of draft: a template layout, or a free draft of `length` tokens after a prefix.
    `labels` are the template's labels of two words or more, as word tuples."""

    name: str
    layout: template.Layout | None = None
    length: int = 0
    labels: tuple[tuple[str, ...], ...] = ()


def template_labels(text: str) -> tuple[tuple[str, ...], ...]:
    """The words before each slot on its line ("Part name: {{slot:6}}" -> ("part", "name")),
    for labels of two words or more (one-word labels such as "Aircraft" are ordinary words)."""
    out = []
    for line in text.splitlines():
        if "{{" in line:
            ws = tuple(words(line.split("{{", 1)[0]))
            if len(ws) >= 2:
                out.append(ws)
    return tuple(out)


def echo_rate(drafts: Sequence[Sequence[str]], labels: Sequence[tuple[str, ...]]) -> float:
    """Share of fills that contain one of `labels` as consecutive words."""
    fills = [words(f) for d in drafts for f in d]
    if not fills or not labels:
        return float("nan")

    def has(ws: list[str]) -> bool:
        return any(tuple(ws[i : i + len(lab)]) == lab for lab in labels for i in range(len(ws) - len(lab) + 1))

    return sum(has(ws) for ws in fills) / len(fills)


def end_rate(drafts: Sequence[Sequence[str]]) -> float:
    """Share of non-empty fills whose text ends a sentence (".", "!" or "?" last): a fill that
    stopped where its text did, not one cut off by its slot's last position."""
    fills = [f.rstrip() for d in drafts for f in d if f.strip()]
    return sum(f[-1] in SENTENCE_ENDS for f in fills) / len(fills) if fills else float("nan")


def _prefix_ids(ck: checkpoint.Checkpoint, test: Sequence[str], seed: int, n_words: int) -> list[int]:
    doc = test[random.Random(seed).randrange(len(test))]
    return ck.tokenizer.encode(" ".join(doc.split()[:n_words]))


def sfdlm_draft(ck: checkpoint.Checkpoint, cfg: SamplerConfig, job: Job, seed: int, test: Sequence[str],
                prefix_words: int) -> tuple[list[str], float, tuple[float, float]]:
    """(fill texts, seconds, churn) of one SFDLM draft; churn is the share of free positions that
    changed per step over the last quarter of steps, and at the last step."""
    cfg = dataclasses.replace(for_kind(cfg, free_length=job.layout is None), seed=seed)
    tok = ck.tokenizer
    if job.layout is not None:
        pins, length = dict(job.layout.pins), job.layout.length
        labels = list(job.layout.pins.values())
        spans = [(s.start, s.start + s.length) for s in job.layout.slots]
    else:
        prefix = _prefix_ids(ck, test, seed, prefix_words)
        pins, length = dict(enumerate(prefix)), job.length
        labels = []
        spans = [(len(prefix), job.length)]
    t0 = time.perf_counter()
    last = None
    changed: list[float] = []
    free = max(1, length - len(pins))
    for last in sample(ck.model, ck.diffusion(), cfg, length=length, pins=pins, words=ck.words, labels=labels):
        changed.append(int(last.changed.sum()) / free)
    seconds = time.perf_counter() - t0
    ids = last.tokens.tolist()
    late = changed[1:][-max(1, cfg.steps // 4):]
    return [tok.decode(ids[a:b]) for a, b in spans], seconds, (statistics.mean(late), changed[-1])


def ar_draft(ar: checkpoint.Checkpoint, cfg: SamplerConfig, job: Job, seed: int, test: Sequence[str],
             prefix_words: int, labels: bool = False) -> tuple[list[str], float, None]:
    """(fill texts, seconds) of the causal transformer writing the same places left to right.
    With `labels`, it keeps the template's labels out of its slots by the SFDLM's avoid_labels
    rule: no capitalised label-word token, and no draw that completes a label of two words or
    more with the tokens before it (drawn again without it)."""
    tok = ar.tokenizer
    gen = torch.Generator().manual_seed(seed)
    banned, veto = None, None
    if labels and job.layout is not None:
        if ar.words is None:
            raise ValueError("the label rule needs the causal model's lexicon (lexicon.txt in its folder)")
        rule, label_rule = ar.words, LabelRule.of(ar.words, list(job.layout.pins.values()))
        banned = label_rule.ids

        def veto(ids: list[int], t: int) -> bool:
            return bool(label_rule.phrases) and rule.completes_phrase(ids[-PHRASE_WINDOW:], t, [], label_rule.phrases)
    t0 = time.perf_counter()
    if job.layout is not None:
        seq = [tok.bos_id]
        fills: list[list[int]] = []
        pos = 0
        for slot in job.layout.slots:
            seq += [job.layout.pins[p] for p in range(pos, slot.start)]
            out = ar.model.generate(torch.tensor([seq]), slot.length, cfg.temperature, cfg.top_p, gen,
                                    banned=banned, veto=veto)[0].tolist()
            fills.append(out[len(seq):])
            seq = out
            pos = slot.start + slot.length
        texts = [tok.decode(f) for f in fills]
    else:
        prefix = [tok.bos_id, *_prefix_ids(ar, test, seed, prefix_words)]
        out = ar.model.generate(torch.tensor([prefix]), job.length - len(prefix) + 1, cfg.temperature, cfg.top_p, gen)
        texts = [tok.decode(out[0, len(prefix):].tolist())]
    return texts, time.perf_counter() - t0, None


def jobs_for(ck: checkpoint.Checkpoint, templates: Sequence[Path], free: Sequence[int]) -> list[Job]:
    out = []
    for p in templates:
        text = p.read_text(encoding="utf-8")
        out.append(Job(p.stem, layout=template.expand(text, ck.tokenizer), labels=template_labels(text)))
    return out + [Job(f"free-{n}", length=n) for n in free]


def measure(judge: Judge, draw, job: Job, seeds: Sequence[int], test: Sequence[str]) -> dict:
    """Score one row: drafts from draw(job, seed), their real-text twins, seconds per draft."""
    drafts, secs, churn = [], [], []
    for s in seeds:
        fills, sec, ch = draw(job, s)
        drafts.append(fills)
        secs.append(sec)
        if ch is not None:
            churn.append(ch)
    rng = random.Random(12345)
    real = [cut_like(test, [len(words(f)) for f in d], start=rng.randrange(len(test))) for d in drafts for _ in range(REAL_PER_DRAFT)]
    late = (statistics.mean(c[0] for c in churn), statistics.mean(c[1] for c in churn)) if churn else None
    return {"row": job.name, "model": judge.score(drafts), "real": judge.score(real),
            "s_per_draft": statistics.median(secs), "churn": late, "example": drafts[0],
            "echo": (echo_rate(drafts, job.labels), echo_rate(real, job.labels)),
            "ends": end_rate(drafts)}


def ratios(model: Scores, real: Scores) -> dict[str, float]:
    return {m: getattr(model, m) / getattr(real, m) if getattr(real, m) else float("nan") for m in MEASURES}


def _fmt_row(label: str, r: dict) -> str:
    m, q = r["model"], ratios(r["model"], r["real"])
    return (f"| {label} | {m.ppl:.1f} | {q['ppl']:.2f}x | {100 * m.oov:.1f} % | {q['oov']:.2f}x | {m.distinct2:.3f} | "
            f"{q['distinct2']:.2f}x | {100 * m.repeat:.1f} % | {q['repeat']:.2f}x | {m.entropy:.2f} | {q['entropy']:.2f}x | "
            f"{r['s_per_draft']:.2f} | {_churn(r.get('churn'))} | {_echo(r.get('echo'))} | {_share(r.get('ends'))} |")


def _echo(e: tuple[float, float] | None) -> str:
    return "-" if e is None or e[0] != e[0] else f"{100 * e[0]:.0f} % ({100 * e[1]:.0f} %)"


def _share(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.0f} %"


def _churn(c: tuple[float, float] | None) -> str:
    return "-" if c is None else f"{100 * c[0]:.1f} % / {100 * c[1]:.1f} %"


HEADER = ("| {} | judge ppl | vs real | OOV | vs real | distinct-2 | vs real | repeat | vs real | entropy | vs real | s/draft "
          "| changed / step, last ¼ / last | label echo (real) | fills ending a sentence |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.draft_quality", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"), help="SFDLM model folder (default assets/model)")
    p.add_argument("--data", type=Path, default=Path("data/corpus"), help="prepared corpus: the judge fits train.jsonl, real text from test.jsonl")
    p.add_argument("--templates", type=Path, nargs="*", default=None, help="template files (default: assets/templates/*.txt)")
    p.add_argument("--free", default="128,256", help="free-draft lengths in tokens, comma-separated ('' for none)")
    p.add_argument("--prefix-words", type=int, default=3, help="words of a test report pinned before a free draft (default 3)")
    p.add_argument("--drafts", type=int, default=50, help="drafts per row, seeds 0..N-1 (default 50)")
    p.add_argument("--ar-model", type=Path, default=None, help="causal transformer folder for the reference row")
    p.add_argument("--sweep", nargs="*", default=[], metavar="SPEC", help="sampler settings for the quality / latency table")
    p.add_argument("--sweep-rows", default="service_difficulty_report,free-128", help="rows the sweep drafts (comma-separated)")
    p.add_argument("--sweep-drafts", type=int, default=25, help="drafts per sweep row (default 25)")
    p.add_argument("--no-main", action="store_true", help="only the sweep")
    p.add_argument("--ar-only", action="store_true", help="with --ar-model: only the causal transformer's main rows")
    p.add_argument("--ar-temperature", type=float, default=1.0, help="the causal transformer's temperature (default 1.0)")
    p.add_argument("--ar-top-p", type=float, default=1.0, help="the causal transformer's top-p (default 1.0)")
    p.add_argument("--ar-labels", action="store_true",
                   help="the causal transformer keeps a template's labels out of its slots, as avoid_labels does")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    judge = Judge.from_split(args.data / "train.jsonl")
    with (args.data / "test.jsonl").open(encoding="utf-8") as f:
        test = [json.loads(line)["text"] for line in f if line.strip()]
    ck = checkpoint.load(args.model)
    templates = args.templates if args.templates is not None else sorted(Path("assets/templates").glob("*.txt"))
    free = [int(x) for x in args.free.split(",") if x.strip()]
    jobs = jobs_for(ck, templates, free)
    print(f"judge {judge.version} ({len(judge.vocab):,} words); model {ck.name} ({args.model}); "
          f"{args.threads} thread(s); {platform.processor() or platform.machine()}")
    out: dict = {"judge": judge.version, "model": str(args.model), "threads": args.threads, "main": [], "ar": [], "sweep": []}

    def sfdlm(cfg: SamplerConfig):
        return lambda job, seed: sfdlm_draft(ck, cfg, job, seed, test, args.prefix_words)

    if not args.no_main:
        cfg = ck.sampler_cfg
        print(f"\nmain rows: the model's sampler settings {dataclasses.asdict(cfg)}, {args.drafts} drafts a row\n")
        print(HEADER.format("row"))
        for job in [] if args.ar_only else jobs:
            r = measure(judge, sfdlm(cfg), job, range(args.drafts), test)
            out["main"].append(r)
            print(_fmt_row(job.name, r), flush=True)
        if args.ar_model is not None:
            ar = checkpoint.load(args.ar_model)
            for job in jobs_for(ar, templates, free):
                ar_cfg = SamplerConfig(temperature=args.ar_temperature, top_p=args.ar_top_p)
                r = measure(judge, lambda j, s: ar_draft(ar, ar_cfg, j, s, test, args.prefix_words, args.ar_labels), job,
                            range(args.drafts), test)
                out["ar"].append(r)
                print(_fmt_row(f"{job.name} (causal{', label rule' if args.ar_labels else ''})", r), flush=True)
        rows = out["main"] or out["ar"]
        pooled = [(r["model"].ppl, r["real"].ppl) for r in rows]
        print("\nreal text per row: " + ", ".join(f"{r['row']} ppl {r['real'].ppl:.1f} OOV {100 * r['real'].oov:.1f} %"
                                                 for r in rows))
        if pooled:
            print(f"median ppl ratio over rows: {statistics.median(a / b for a, b in pooled):.2f}x")

    if args.sweep:
        names = [n.strip() for n in args.sweep_rows.split(",") if n.strip()]
        rows = [j for j in jobs if j.name in names]
        print(f"\nsweep: rows {', '.join(j.name for j in rows)}, {args.sweep_drafts} drafts each (pooled)\n")
        print(HEADER.format("setting"))
        for spec in args.sweep:
            cfg = parse_sampler_spec(spec, ck.sampler_cfg)
            parts = [measure(judge, sfdlm(cfg), job, range(args.sweep_drafts), test) for job in rows]
            merged = _merge(judge, parts)
            out["sweep"].append({"spec": spec, **merged})
            print(_fmt_row(spec, merged), flush=True)

    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=_jsonable) + "\n")
    return 0


def _merge(judge: Judge, parts: Sequence[dict]) -> dict:
    """Pool several rows' scores, weighting each measure by words (ppl in log space)."""
    def pool(key: str) -> Scores:
        ss = [p[key] for p in parts]
        n = sum(s.words for s in ss)
        lp = sum(math.log(s.ppl) * s.words for s in ss) / n
        avg = {m: sum(getattr(s, m) * s.words for s in ss) / n for m in ("oov", "distinct2", "repeat", "entropy")}
        return Scores(sum(s.drafts for s in ss), n, math.exp(lp), **avg)

    return {"row": "+".join(p["row"] for p in parts), "model": pool("model"), "real": pool("real"),
            "s_per_draft": statistics.median(p["s_per_draft"] for p in parts), "example": parts[0]["example"],
            "churn": parts[0]["churn"] and tuple(statistics.mean(p["churn"][i] for p in parts) for i in (0, 1)),
            "echo": parts[0]["echo"], "ends": parts[0].get("ends")}


def _jsonable(obj: object) -> object:
    if isinstance(obj, Scores):
        return obj.as_dict()
    return str(obj)


if __name__ == "__main__":
    raise SystemExit(main())
