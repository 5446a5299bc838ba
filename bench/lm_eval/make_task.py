"""Writes an lm-evaluation-harness task that runs offline: a multiple-choice cloze over a
text's sentences (the start of a sentence, its true ending and three endings of other
sentences), as a JSON-lines dataset beside the task's YAML.

    python bench/lm_eval/make_task.py data/persuasion.txt OUT_DIR [--n 200] [--seed 0]
    lm_eval --include_path OUT_DIR --tasks onebit_cloze ...
"""
import argparse
import json
import os
import random
import re


def sentences(text):
    text = re.sub(r"\s+", " ", text)
    for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", text):
        if 60 <= len(s) <= 200 and len(s.split()) >= 10:
            yield s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with open(a.text, encoding="utf-8") as f:
        pool = list(dict.fromkeys(sentences(f.read())))
    rng = random.Random(a.seed)
    picked = rng.sample(pool, min(a.n, len(pool)))
    split = lambda s: (" ".join(s.split()[: len(s.split()) * 3 // 5]), " " + " ".join(s.split()[len(s.split()) * 3 // 5 :]))
    os.makedirs(a.out, exist_ok=True)
    data = os.path.join(os.path.abspath(a.out), "onebit_cloze.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        for s in picked:
            context, ending = split(s)
            others = [split(o)[1] for o in rng.sample(pool, 4) if o != s][:3]
            choices = others + [ending]
            rng.shuffle(choices)
            f.write(json.dumps({"context": context, "choices": choices, "label": choices.index(ending)}) + "\n")
    with open(os.path.join(a.out, "onebit_cloze.yaml"), "w", encoding="utf-8") as f:
        f.write(f"""task: onebit_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    print(f"{len(picked)} questions from {len(pool)} sentences: {data}")


if __name__ == "__main__":
    main()
