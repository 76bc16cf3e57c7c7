"""RLHF at toy scale: pretrain a tiny LM on a grammar, learn a reward model from preferences,
fine-tune with PPO under a KL penalty (derivations/12-rlhf.md).

The stages as functions (the pipeline, pgnumpy/rlhf/pipeline.py, calls them in this order):
    grammar.Grammar, grammar.gold_reward       the language and the hidden rater
    lm.pretrain(LMConfig, grammar, rng)        -> (TinyLM, history)
    reward_model.train_reward_model(RMConfig, lm, grammar, rng, max_len) -> (RewardModel, ...)
    finetune.rl_finetune(RLConfig, lm, rm, grammar, rng) -> (policy, history)
    pipeline.run(RLHFConfig(), out)            everything, writing a run directory
This file imports nothing, so `python -m pgnumpy.rlhf` can set BLAS threads before numpy loads.
"""
