"""Compares two lm_eval runs' per-choice loglikelihoods (--log_samples outputs): their
differences (median, 90th percentile, largest), and the questions whose pick (acc, acc_norm)
differs, with the top two loglikelihoods' gap in the first run.

    python bench/lm_eval/compare.py RUN_DIR_A RUN_DIR_B
"""
import glob
import json
import sys


def samples(d):
    [path] = glob.glob(f"{d}/**/samples_*.jsonl", recursive=True)
    with open(path) as f:
        return {s["doc_id"]: s for s in map(json.loads, f)}


def main():
    a, b = samples(sys.argv[1]), samples(sys.argv[2])
    assert a.keys() == b.keys(), "different questions"
    diffs, flips = [], []
    for k in sorted(a):
        la = [float(r[0]) for r in a[k]["filtered_resps"]]
        lb = [float(r[0]) for r in b[k]["filtered_resps"]]
        diffs += [abs(x - y) for x, y in zip(la, lb)]
        for m in ("acc", "acc_norm"):
            if a[k][m] != b[k][m]:
                gap = sorted(la, reverse=True)[:2]
                flips.append((k, m, a[k][m], b[k][m], round(gap[0] - gap[1], 5)))
    diffs.sort()
    print(json.dumps({
        "questions": len(a), "choices": len(diffs),
        "abs_loglikelihood_diff": {"median": diffs[len(diffs) // 2], "p90": diffs[len(diffs) * 9 // 10], "max": diffs[-1]},
        "pick_flips": flips,
    }))


if __name__ == "__main__":
    main()
