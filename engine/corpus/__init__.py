"""Training and evaluation text: the FAA SDR corpus, or a user's own documents.

Glossary
  document  one unit of text the model trains on: `Document(text, source)`, text normalised
  source    where a document came from: `Fire.csv:12` (file and line where the CSV record or
            JSONL line starts) or, for a folder of files, the path relative to that folder
  skipped   an input that yielded no document, with the reason: `Skipped(source, reason)`
  group     documents a split keeps together: an SDR category file, or one folder of files
  split     `train`, `validation` or `test`; written as `<split>.jsonl` plus `splits.json`
  fractions the wanted share of documents per split, e.g. (0.8, 0.1, 0.1)
  SDR       FAA Service Difficulty Report: a free-text maintenance / defect report
  wheel     the PyPI file `sdr-hazards-classification==1.0.0` whose `data/*.csv` hold the SDRs

Modules
  text      documents, skip reports and errors; normalisation, de-duplication, decoding bytes
  loaders   a user's documents from a folder of .txt/.md, a .jsonl or a .csv
  splits    fractions, random and group splits, writing and reading a split folder
  fetch     the SDR corpus: download the wheel (pip), read its CSVs, split by category file
  prepare   a user's documents: load, de-duplicate, split
  __main__  the command line, `python -m engine.corpus {fetch,prepare}`

Normalisation is Unicode NFC, then every run of whitespace (newlines included) becomes one
space, and the ends are stripped. De-duplication drops exact repeats after normalisation and
keeps the first occurrence in reading order. The SDR corpus is split by category file (near
duplicates of a report usually sit in the same file, so they cannot leak across splits); user
documents are split at random with an explicit seed, or by folder with --group-by-folder.
Nothing here needs the network except `fetch`, and `fetch` only runs `pip download`.
"""
