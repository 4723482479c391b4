"""The README's verdict table from evaluation runs: per run and window type, the tool's forecast against
persistence (point skill, the Diebold–Mariano p of the forecast as generated being worse) and against the
strongest simple references (coverage, CRPS, the best reference and the CRPS skill against it).

    python -m benchmarks.verdict_table P1=<run>/metrics.json P2=<run>/metrics.json
"""

from __future__ import annotations

import json
import sys


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _num(value, fmt: str = "+.3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def rows(label: str, path: str, model: str = "tuned") -> list[str]:
    record = json.load(open(path, encoding="utf-8"))
    metrics, calibration = record["metrics"], record["context"].get("calibration", {}).get(model, {})
    out = []
    for window, entry in metrics[model].items():
        s = entry["all"]
        raw = metrics.get(f"{model}_raw", {}).get(window, {}).get("all", s)  # as generated, where it was weighed
        weight = (calibration.get("weights") or {}).get(window)
        family = (calibration.get("families") or {}).get(window, "conformal")
        refs = " / ".join(f"{metrics[r][window]['all']['crps']:.3f}" for r in ("ewma", "garch"))
        out.append(
            f"| {label} | {window} | {_num(weight, 'g')} | {_num(s['skill_mape'])}{_ci(s.get('skill_mape_ci95'))} | "
            f"{_num(raw['skill_mape'])} (p {_num(raw.get('dm_p_worse'), '.3f')}) | {family} | "
            f"{100 * s['coverage80']:.1f}% ({100 * s['coverage80_fixed']:.1f}%) | "
            f"{100 * s['coverage95']:.1f}% ({100 * s['coverage95_fixed']:.1f}%) | {s['crps']:.3f} | {refs} | "
            f"{s['best_reference']} | {_num(s['crps_skill_best'])}{_ci(s.get('crps_skill_best_ci95'))} |"
        )
    return out


def main(argv: list[str]) -> None:
    print(
        "| period | window | weight | point skill vs persistence [95% CI] | as generated (DM p worse) | band | "
        "80% covers (fixed level) | 95% covers (fixed) | CRPS % | EWMA / GARCH CRPS % | best reference | "
        "CRPS skill vs it [95% CI] |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for arg in argv:
        label, path = arg.split("=", 1)
        print("\n".join(rows(label, path)))


if __name__ == "__main__":
    main(sys.argv[1:])
