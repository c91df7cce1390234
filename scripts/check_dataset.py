"""Check a dataset file against the schema and print its statistics beside the study's.

    python scripts/check_dataset.py --file=my_prompts.jsonl
    python scripts/check_dataset.py --file=my_prompts_ja.jsonl --language=ja

The file is what `--config.dataset.path=` takes (the schema: jaxcirc/data/dataset.py). Balance
across the four classes is required unless every record is a real-world one. A file holds one
language: --language insists on it (default: the language of the file's first record); an
`en_id` must name a shipped English prompt of the same emotion. A broken file: one line naming
file:line and the fix on stderr, exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from scripts import cli  # noqa: E402

_FILE = flags.DEFINE_string("file", None, "The JSONL dataset file to check.")
_LANGUAGE = flags.DEFINE_string(
    "language", "", "The language every record must be in (en, ja); empty: the file's own."
)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])}; pass options as --flag=value")
    if not _FILE.value:
        cli.fail("--file is required, e.g. --file=runs/demo/dataset/prompts.jsonl")
    from jaxcirc.phases import dataset as phase

    table = cli.run_or_exit(lambda: phase.check_file(_FILE.value, _LANGUAGE.value or None))
    print(f"{_FILE.value}: OK")
    print(table)


if __name__ == "__main__":
    cli.main(main)
