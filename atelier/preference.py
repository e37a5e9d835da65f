"""Preference from pairwise votes: a Bradley-Terry fit, head-to-head win rates, the preferred guidance. Pure.

An "item" is what a vote compares: a model version ("3"), or a guidance setting ("2.0") of one version. Bradley-Terry
gives each item a log-strength s, and P(i preferred to j) = 1 / (1 + exp(-(s_i - s_j))). A tie counts half a win to
each side; a flag is not a preference and is left out. The fit maximises the log-likelihood plus a Gaussian prior
N(0, 1/ridge) on each s (the `ridge`), so it is defined with few votes and with an unbeaten item; the prior is centred,
so the scores sum to zero. Intervals are 95% Laplace intervals from the Hessian at the optimum (the Fisher information
plus the prior). A vote is a dict with the ledger's columns (provenance/votes.py): left_version, right_version,
left_guidance, right_guidance, choice, id, reviewer.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
CHOICES = ("left", "right", "tie")  # preferences; "flag" is not one


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def outcome(vote: dict) -> float:
    """The left side's score in one vote: 1 (left preferred), 0 (right), 0.5 (tie). A flag raises ValueError."""
    scores = {"left": 1.0, "right": 0.0, "tie": 0.5}
    if vote["choice"] not in scores:
        raise ValueError(f"vote {vote.get('id')}: choice {vote['choice']!r} is not a preference (left, right, tie)")
    return scores[vote["choice"]]


def fit(comparisons: list[tuple[str, str, float]], ridge: float = 0.1, max_iter: int = 100) -> dict[str, dict]:
    """Bradley-Terry scores from (item a, item b, a's score 1 | 0.5 | 0) comparisons: item -> {score, low, high,
    wins, losses, ties, votes}; scores are log-strengths centred on 0, with 95% intervals."""
    return _fit(comparisons, ridge, max_iter)[0]


def _fit(comparisons: list[tuple[str, str, float]], ridge: float, max_iter: int = 100):
    if ridge < 0:
        raise ValueError(f"ridge {ridge} must be >= 0")
    items = sorted({x for a, b, _ in comparisons for x in (a, b)})
    index = {item: i for i, item in enumerate(items)}
    n = len(items)
    a = np.array([index[c[0]] for c in comparisons], dtype=int)
    b = np.array([index[c[1]] for c in comparisons], dtype=int)
    y = np.array([float(c[2]) for c in comparisons])
    if any(v not in (0.0, 0.5, 1.0) for v in y):
        raise ValueError("each comparison's score must be 1 (first preferred), 0.5 (tie) or 0 (second preferred)")
    if any(a == b):
        raise ValueError("an item cannot be compared with itself")
    if ridge == 0 and not _strongly_connected(n, a, b, y):
        raise ValueError(
            "with ridge 0 the Bradley-Terry fit has no maximum (some items never lost, or never won, "
            "against the rest); use a ridge > 0"
        )
    s = np.zeros(n)

    def hessian(s):
        p = 1.0 / (1.0 + np.exp(-(s[a] - s[b])))
        w = p * (1.0 - p)
        h = ridge * np.eye(n)
        np.add.at(h, (a, a), w)
        np.add.at(h, (b, b), w)
        np.add.at(h, (a, b), -w)
        np.add.at(h, (b, a), -w)
        return p, h  # h: the negative Hessian of the penalised log-likelihood

    for _ in range(max_iter):
        p, h = hessian(s)
        grad = -ridge * s
        np.add.at(grad, a, y - p)
        np.add.at(grad, b, p - y)
        step = np.linalg.pinv(h) @ grad  # Newton; pinv: with ridge 0 the scores are defined up to a constant
        s = s + step
        s = s - s.mean()
        if np.max(np.abs(step), initial=0.0) < 1e-10:
            break
    else:
        raise ValueError(
            f"the Bradley-Terry fit did not converge in {max_iter} steps (an unbeaten item with "
            "ridge 0?); use a ridge > 0"
        )
    cov = np.linalg.pinv(hessian(s)[1])
    scores = {}
    for item, i in index.items():
        mine = (a == i) | (b == i)
        won = np.where(a == i, y, 1.0 - y)[mine]
        sd = math.sqrt(max(cov[i, i], 0.0))
        scores[item] = {
            "score": float(s[i]),
            "low": float(s[i] - Z95 * sd),
            "high": float(s[i] + Z95 * sd),
            "wins": int((won == 1).sum()),
            "losses": int((won == 0).sum()),
            "ties": int((won == 0.5).sum()),
            "votes": int(mine.sum()),
        }
    return scores, s, cov, index


def _strongly_connected(n: int, a, b, y) -> bool:
    """Ford's condition for a maximum-likelihood fit: every item reaches every other through "beat or tied" edges."""
    reach = np.eye(n, dtype=bool)
    reach[a[y > 0], b[y > 0]] = True  # a beat (or tied) b
    reach[b[y < 1], a[y < 1]] = True  # b beat (or tied) a
    for _ in range(max(n - 1, 0).bit_length() + 1):  # transitive closure by repeated squaring
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    return bool(reach.all())


def win_probability(comparisons: list[tuple[str, str, float]], first: str, second: str, ridge: float = 0.1) -> dict:
    """P(first preferred to second) under the Bradley-Terry fit of all `comparisons`, with its 95% interval (from
    the interval of the score difference)."""
    _, s, cov, index = _fit(comparisons, ridge)
    for item in (first, second):
        if item not in index:
            raise KeyError(f"no vote compares {item!r}; items with votes: {sorted(index)}")
    i, j = index[first], index[second]
    d = float(s[i] - s[j])
    sd = math.sqrt(max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0.0))
    return {"probability": _sigmoid(d), "low": _sigmoid(d - Z95 * sd), "high": _sigmoid(d + Z95 * sd)}


def wilson(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (ties count half, so `successes` may be fractional)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 / denominator * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def version_comparisons(votes: list[dict]) -> list[tuple[str, str, float]]:
    """Votes between two different model versions, as (left version, right version, left's score); flags and votes
    between settings of one version are left out."""
    return [
        (str(v["left_version"]), str(v["right_version"]), outcome(v))
        for v in votes
        if v["choice"] in CHOICES and str(v["left_version"]) != str(v["right_version"])
    ]


def guidance_comparisons(votes: list[dict], version: str) -> list[tuple[str, str, float]]:
    """Votes between two guidance settings of `version` (both sides that version), items named by the guidance."""
    return [
        (f"{float(v['left_guidance']):g}", f"{float(v['right_guidance']):g}", outcome(v))
        for v in votes
        if v["choice"] in CHOICES
        and str(v["left_version"]) == str(v["right_version"]) == str(version)
        and float(v["left_guidance"]) != float(v["right_guidance"])
    ]


def _id_summary(ids: list[int]) -> dict:
    ids = sorted(ids)
    return {"first": ids[0], "last": ids[-1], "ids": ids if len(ids) <= 50 else None} if ids else {"ids": []}


def head_to_head(votes: list[dict], challenger: str, champion: str, ridge: float = 0.1) -> dict:
    """The challenger against the champion, on the votes that compare exactly these two versions (each vote shows
    both on one prompt and seed): vote count, wins, losses, ties, win rate (ties half) with its 95% Wilson interval,
    the Bradley-Terry probability over all version votes with its interval, the vote ids and the reviewer count."""
    challenger, champion = str(challenger), str(champion)
    used = [
        v
        for v in votes
        if v["choice"] in CHOICES and {str(v["left_version"]), str(v["right_version"])} == {challenger, champion}
    ]
    won = [outcome(v) if str(v["left_version"]) == challenger else 1 - outcome(v) for v in used]
    n = len(used)
    low, high = wilson(sum(won), n)
    out = {
        "challenger": challenger,
        "champion": champion,
        "votes": n,
        "wins": won.count(1.0),
        "losses": won.count(0.0),
        "ties": won.count(0.5),
        "win_rate": sum(won) / n if n else None,
        "low": low,
        "high": high,
        "interval": "95% Wilson, ties count half",
        "reviewers": len({v["reviewer"] for v in used}),
        "vote_ids": _id_summary([int(v["id"]) for v in used]),
    }
    if n:
        out["bradley_terry"] = win_probability(version_comparisons(votes), challenger, champion, ridge)
    return out


def preferred_guidance(votes: list[dict], version: str, current: float, ridge: float = 0.1) -> dict | None:
    """The guidance setting of `version` that reviewers prefer (highest Bradley-Terry score), its score interval,
    and its win probability against the `current` setting; `clearly` is true only when that probability's interval
    lies above 0.5. None when no vote compares two settings of this version."""
    comparisons = guidance_comparisons(votes, version)
    if not comparisons:
        return None
    scores = fit(comparisons, ridge)
    best = max(scores, key=lambda item: scores[item]["score"])
    out = {
        "version": str(version),
        "guidance": float(best),
        **{k: scores[best][k] for k in ("score", "low", "high")},
        "votes": len(comparisons),
        "current": float(current),
        "scores": scores,
    }
    if f"{float(current):g}" in scores and best != f"{float(current):g}":
        vs = win_probability(comparisons, best, f"{float(current):g}", ridge)
        out["vs_current"] = vs
        out["clearly"] = vs["low"] > 0.5
    else:
        out["clearly"] = False  # the current setting is the preferred one, or was never compared
    return out


def existing_work_flags(votes: list[dict]) -> list[dict]:
    """Artworks flagged as looking like a specific existing work, one row each: artwork id, prompt, seed, model
    version, guidance, how many reviewers flagged it, the vote ids and when it was first flagged (oldest first)."""
    found: dict[str, dict] = {}
    for v in votes:
        if v["choice"] != "flag" or v.get("flag_reason") != "existing_work":
            continue
        artwork = v["flagged"]
        if artwork not in (v["left_artwork"], v["right_artwork"]):
            raise ValueError(
                f"vote {v['id']}: flags artwork {artwork!r}, which is neither side of the pair "
                f"({v['left_artwork']!r}, {v['right_artwork']!r})"
            )
        side = "left" if artwork == v["left_artwork"] else "right"
        row = found.setdefault(
            artwork,
            {
                "artwork": artwork,
                "prompt": v["prompt"],
                "seed": int(v["seed"]),
                "version": str(v[f"{side}_version"]),
                "guidance": float(v[f"{side}_guidance"]),
                "reason": "existing_work",
                "first_flagged": v["created_at"],
                "vote_ids": [],
                "reviewers": set(),
            },
        )
        row["vote_ids"].append(int(v["id"]))
        row["reviewers"].add(v["reviewer"])
        row["first_flagged"] = min(row["first_flagged"], v["created_at"])
    return [
        {**row, "reviewers": len(row["reviewers"])}
        for row in sorted(found.values(), key=lambda r: (r["first_flagged"], r["artwork"]))
    ]
