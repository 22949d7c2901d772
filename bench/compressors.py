"""Compressors that keep learning as they read, on the newest tweets: what issue 26's models
are measured against (docs/keeping-the-model-up-to-date.md, "Measured").

Each compressor is given the dataset's earlier tweets (one per line, in time order, the cleaned
text the models learn from), then the newest ``--future`` ones; the future's cost is the
difference between the two archives' sizes, in bits, over the characters the models score on
those tweets (the sum of their lengths: a model is given each tweet's first character and
scores its end). zpaq and 7-Zip are Debian's `zpaq` and `p7zip-full`; a missing one is skipped.

    python bench/compressors.py [--dataset data/tweets.parquet] [--future 363]
"""

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

COMPRESSORS = {
    "zpaq -m5": (["zpaq", "a", "{out}", "{text}", "-m5", "-t1"], "zpaq"),
    "7-Zip PPMd order 32": (["7z", "a", "-m0=PPMd:o=32:mem=256m", "{out}", "{text}"], "7z"),
}


def archive_bytes(command: list[str], text: Path, out: Path) -> int:
    out.unlink(missing_ok=True)
    subprocess.run([part.format(text=text, out=out) for part in command], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="data/tweets.parquet")
    parser.add_argument("--future", type=int, default=363, help="the newest tweets to score")
    args = parser.parse_args()
    tweets = pd.read_parquet(args.dataset).sort_values("created_at", kind="stable")
    texts = [text.replace("\n", " ") for text in tweets["text"]]
    prior, future = texts[:-args.future], texts[-args.future:]
    characters = sum(len(text) for text in future)
    print(f"{len(prior)} earlier tweets, then {len(future)} from "
          f"{tweets['created_at'].iloc[-args.future]}: {characters} characters scored")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = {"prior": folder / "prior.txt", "all": folder / "all.txt"}
        files["prior"].write_text("\n".join(prior) + "\n")
        files["all"].write_text("\n".join(prior + future) + "\n")
        for name, (command, tool) in COMPRESSORS.items():
            if shutil.which(tool) is None:
                print(f"  {name:20s} skipped: {tool} is not installed")
                continue
            sizes = {key: archive_bytes(command, path, folder / f"{key}.{tool}")
                     for key, path in files.items()}
            bits = 8 * (sizes["all"] - sizes["prior"])
            print(f"  {name:20s} {bits / characters:.4f} bits/char on the future "
                  f"({sizes['prior']:,} bytes for the earlier tweets)")


if __name__ == "__main__":
    main()
