"""The instruction-tuning measurement's data: training and held-out files cut from ../shared/data/instructions.

    python -m benchmarks.instruct_mix --instructions ../shared/data/instructions --out <dir>

Every source is shuffled with seed 0, then cut: the first rows train, the next ones are held out, so no
held-out row was trained on (the comparison's overlap guard checks it again). Fin-Eva is held out whole: it
measures transfer to exam questions of a kind never trained on.

| file | source | rows |
| --- | --- | --- |
| train_fpb / eval_fpb | Financial PhraseBank, sentences with 100% annotator agreement | 1,500 / 300 |
| train_bbt / eval_bbt | BBT FinFE Chinese stock-forum sentiment (train split / eval split) | 2,000 / 300 |
| train_cflue / eval_cflue | CFLUE knowledge exam questions (Chinese, single and multiple choice) | 3,000 / 300 |
| train_esun | E.SUN bank FAQ, Traditional Chinese (Taiwan) | 1,624 / — |
| eval_fineva | Ant Fin-Eva dev exam questions (Chinese) | — / 300 |

The data's licences are research-only for several sources (its README): the files stay out of the project.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shuffled(items: list, seed: int = 0) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def write(path: Path, items: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    print(f"{path.name}: {len(items):,} rows")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instructions", required=True, help="../shared/data/instructions")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    src, out = Path(args.instructions), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fpb = shuffled(r for r in rows(src / "sent_en_fpb.jsonl") if r.get("max_agreement") == "100%")
    write(out / "train_fpb.jsonl", fpb[:1500])
    write(out / "eval_fpb.jsonl", fpb[1500:1800])
    bbt = rows(src / "sent_zh_bbt_finfe.jsonl")
    write(out / "train_bbt.jsonl", shuffled(r for r in bbt if r["split"] == "train")[:2000])
    write(out / "eval_bbt.jsonl", shuffled(r for r in bbt if r["split"] == "eval")[:300])
    cflue = shuffled(rows(src / "zh_cflue_knowledge_mcq.jsonl"))
    write(out / "train_cflue.jsonl", cflue[:3000])
    write(out / "eval_cflue.jsonl", cflue[3000:3300])
    write(out / "train_esun.jsonl", rows(src / "zh_tw_esun_bank_faq.jsonl"))
    write(out / "eval_fineva.jsonl", shuffled(rows(src / "zh_fineva_ant_dev.jsonl"))[:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
